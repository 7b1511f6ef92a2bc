"""Great Expectations itself: the ephemeral context, the suites' folder, cleaned results.

Kept apart from the bundle readers and the unit registry, so that what only
validates (``validation.batch``, which a fleet worker imports first) loads this,
pandas and GX, none of pint, pyarrow's readers or the manifest models.
``great_expectations`` takes seconds to import, so it is only imported inside
:func:`_gx`, never at module or DAG-file level.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.atomic import swap_directory


def expectations_dir() -> Path:
    env = os.environ.get("GREENCERT_EXPECTATIONS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "expectations"


_GX_STATE: dict[str, Any] = {}

# Modules Great Expectations imports at start-up only for expectations GreenCert does not use
# (KL divergence and KS tests import scipy.stats; the KL divergence's chart renderer imports
# altair). Loaded lazily they cost nothing until an attribute is used: about half of the
# GX import (~2 s CPU of ~4.5 s, `-X importtime`); see docs/performance.md.
GX_LAZY_MODULES = frozenset({"scipy.stats", "altair"})


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds ``names`` with the other finders and defers executing them (``importlib.util.LazyLoader``).

    The module object exists at once; its code runs on first attribute access, so
    behaviour is unchanged for any code that does use it.
    """

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = importlib.util.LazyLoader(spec.loader)
                return spec
        return None


@contextlib.contextmanager
def lazy_imports(names: frozenset[str] = GX_LAZY_MODULES) -> Generator[None, None, None]:
    """Import ``names`` lazily while the block runs (only those not imported yet)."""
    finder = _LazyFinder(frozenset(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _gx() -> tuple[Any, Any]:
    """Ephemeral GX context and a dataframe batch definition, created once per process."""
    if "batch_definition" not in _GX_STATE:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        with lazy_imports():
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

        # Some GX modules pin their loggers to INFO on import; quiet them (noise in task logs).
        for name in list(logging.root.manager.loggerDict):
            if name.startswith("great_expectations"):
                logging.getLogger(name).setLevel(logging.WARNING)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("greencert").add_dataframe_asset("profile")
        _GX_STATE["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        _GX_STATE["gx"] = gx
    return _GX_STATE["gx"], _GX_STATE["batch_definition"]


@dataclass
class SuiteResult:
    suite: str
    file: str
    success: bool
    failures: list[dict[str, Any]]
    evaluated: int
    gx_result: dict[str, Any]


def _clean_gx_result(result: dict[str, Any]) -> dict[str, Any]:
    """Drop run-specific fields (load time, random ids) so reports are reproducible."""
    meta = result.get("meta", {})
    meta.get("batch_markers", {}).pop("ge_load_time", None)
    result.pop("id", None)
    for r in result.get("results", []):
        r.get("expectation_config", {}).pop("id", None)
        r.get("expectation_config", {}).get("kwargs", {}).pop("batch_id", None)
    return result


# --- Data Docs: Great Expectations' own HTML pages of a validation run -----------------------------

DATA_DOCS_DIR = "datadocs"
DATA_DOCS_SITE = "greencert"
# GX copies ~4 MB of static files into every site; two tutorial animations (3.3 MB) and the web
# fonts (0.6 MB; the stylesheet falls back to system fonts) are not part of any result and are
# left out, so a certificate's site is about 0.3 MB (docs/label.md).
DATA_DOCS_PRUNE = (
    "static/images/glossary_scroller.gif",
    "static/images/validation_failed_unexpected_values.gif",
    "static/fonts",
)


_BUILD_STAMP = re.compile(r"\?d=\d{8}T\d{6}\.\d{6}Z")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class _Numbering:
    """``re.sub`` replacement: each distinct id becomes the next fixed-format number."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def __call__(self, match: re.Match[str]) -> str:
        return self.ids.setdefault(match.group(0), f"00000000-0000-4000-8000-{len(self.ids):012d}")


def _make_reproducible(site: Path, run_time: str) -> None:
    """Pin what GX makes up at render time: the build time (a cache-busting ``?d=`` on one image
    URL) and random ids of collapsible blocks, numbered instead in order of appearance, so that
    certifying the same bundle again gives byte-identical pages (like every other published file)."""
    stamp = "?d=" + re.sub(r"[^0-9TZ]", "", run_time)
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        fixed = _UUID.sub(_Numbering(), _BUILD_STAMP.sub(stamp, text))
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def build_data_docs(report: dict[str, Any], target: Path, run_name: str, run_time: str) -> Path:
    """Build a Data Docs site of ``report``'s suite results into ``target``; return its index.html.

    ``report`` is a validation report as written to ``validation.json`` (each suite's
    ``great_expectations_result`` is GX's own result document). The results are put into an
    ephemeral context's validation-results store and rendered by GX's ``SiteBuilder``
    (``context.build_data_docs``), so the pages are the ones a GX user knows: one per suite run,
    failed expectations first with their unexpected rows. ``run_time`` (the period end) names the
    run, so reruns give the same page paths. The site is built beside ``target`` and moved in whole.
    """
    import shutil
    import tempfile

    gx, _ = _gx()
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        context = gx.get_context(mode="ephemeral")
        context.add_data_docs_site(
            DATA_DOCS_SITE,
            {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(staging),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        keys = []
        for i, suite in enumerate(report.get("suites") or []):
            result = ExpectationSuiteValidationResult(**suite["great_expectations_result"])
            key = ValidationResultIdentifier(
                ExpectationSuiteIdentifier(suite["suite"]),
                RunIdentifier(run_name=f"{run_name}-{i:02d}-{suite['file']}", run_time=run_time),
                "whole",
            )
            context.validation_results_store.set(key, result)
            keys.append(key)
        context.build_data_docs(site_names=[DATA_DOCS_SITE], resource_identifiers=keys)
        _make_reproducible(staging, run_time)
        for rel in DATA_DOCS_PRUNE:
            path = staging / rel
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        swap_directory(staging, target)  # renames only: no moment without a folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target / "index.html"


def failed_page(site: Path, report: dict[str, Any]) -> str | None:
    """The Data Docs page (relative to ``site``) of the first suite that failed in ``report``.

    GX's index lists the runs with a script loaded from a CDN; the validation pages themselves are
    plain HTML, so a rejection links straight to the page that shows the failed expectation.
    """
    for i, suite in enumerate(report.get("suites") or []):
        if suite.get("success"):
            continue
        for page in sorted((Path(site) / "validations" / suite["suite"]).glob(f"*-{i:02d}-*/*/*.html")):
            return page.relative_to(site).as_posix()
    return None


def import_gx_quietly(hide_sqlalchemy: bool = False) -> None:
    """Import GX with the cyclic collector paused, then freeze what was imported.

    Importing GX builds a few million objects, none of them garbage: the collector's passes
    over them were ~15 % of the import. ``hide_sqlalchemy``: GX treats SQLAlchemy as optional
    and loads its SQL support when it is installed (Airflow installs it); GreenCert validates
    pandas frames only, so when SQLAlchemy is not imported yet it is hidden during the import
    (about a quarter of it) and visible again afterwards. Where it is already imported (an
    Airflow task) nothing changes.
    """
    hidden = hide_sqlalchemy and "sqlalchemy" not in sys.modules
    if hidden:
        sys.modules["sqlalchemy"] = None  # type: ignore[assignment]  # import raises ImportError
    gc.disable()
    try:
        _gx()
    finally:
        gc.freeze()
        gc.enable()
        if hidden and sys.modules.get("sqlalchemy") is None:
            del sys.modules["sqlalchemy"]

"""Airflow task bodies: resolve the data interval and params, then call the pipeline stages.

Kept out of the DAG file so the DAG file stays a thin wiring of tasks, and so
every body is importable and testable without a scheduler. Work folders are
keyed on deployment and data interval: a rerun of the same interval rewrites
the same files (idempotent) and publishing replaces the same certificate id.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from greencert.times import interval_key, to_utc

log = logging.getLogger("greencert")

# $GREENCERT_CONFIG lets an installed package (the Docker image) point at its fleet config.
DEFAULT_CONFIG = os.environ.get("GREENCERT_CONFIG") or str(
    Path(__file__).resolve().parents[2] / "dags" / "config" / "sample_fleet.yaml"
)


def work_folder(config_path: str, deployment: str, start: Any, end: Any) -> str:
    from greencert.config import load_config

    cfg = load_config(config_path)
    folder = cfg.work_path / "runs" / deployment / interval_key(to_utc(start), to_utc(end))
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def list_deployments(config_path: str, subset: list[str] | None = None) -> list[str]:
    """Deployments of the fleet config, optionally restricted to ``subset`` (unknown names are an error)."""
    from greencert.config import load_config
    from greencert.errors import ConfigError

    cfg = load_config(config_path)
    names = [d.deployment for d in cfg.deployments]
    if subset:
        unknown = sorted(set(subset) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown deployment(s) {', '.join(unknown)}; configured: {', '.join(names)}", config_path
            )
        names = [n for n in names if n in subset]
    log.info("certifying %d deployment(s): %s", len(names), ", ".join(names))
    return names


def extract(config_path: str, deployment: str, start: Any, end: Any) -> str:
    from greencert.errors import GreenCertError
    from greencert.sources.extract import extract_stage

    try:
        path = extract_stage(config_path, deployment, to_utc(start), to_utc(end))
    except GreenCertError as exc:
        # A source that is down or incomplete is a reason too: the page answers "why no certificate?".
        record_rejection(work_folder(config_path, deployment, start, end), "extract", exc)
        raise
    files = sorted(p for p in Path(path).iterdir() if p.is_file())
    log.info(
        "extracted %s for [%s, %s): %d files, %s bytes (%s) -> %s",
        deployment,
        to_utc(start).isoformat(),
        to_utc(end).isoformat(),
        len(files),
        f"{sum(p.stat().st_size for p in files):,}",
        ", ".join(f"{p.name} {p.stat().st_size:,} B" for p in files),
        path,
    )
    return path


def segment_bundles(config_path: str, deployment: str, bundle: str, work: str) -> list[dict[str, str]]:
    """What to certify for one deployment and interval: ``[{bundle, work}]`` for the bundle itself, or one
    entry per segment when its manifest declares segments (a change of engine, model or GPUs).

    Segment bundles are written under ``<work>/segments`` (replaced whole on a rerun); each segment's work
    folder is the one of its own interval, as if it had been extracted on its own, so its rejection record
    and certificate are keyed like any other period's.
    """
    from greencert.bundle.manifest import load_manifest
    from greencert.config import load_config
    from greencert.errors import GreenCertError
    from greencert.grading import DEFAULT_SCHEME, load_scheme
    from greencert.segments import split_bundle

    try:
        if not load_manifest(Path(bundle)).segments:
            return [{"bundle": bundle, "work": work}]
        cfg = load_config(config_path)
        scheme = load_scheme(cfg.scheme_path or DEFAULT_SCHEME)
        items = []
        for seg in split_bundle(bundle, Path(work) / "segments", scheme.max_gap_seconds):
            period = load_manifest(seg).period
            items.append(
                {"bundle": str(seg), "work": work_folder(config_path, deployment, period.start, period.end)}
            )
    except GreenCertError as exc:
        record_rejection(work, "extract", exc)
        raise
    log.info(
        "%s: %d segment(s) to certify: %s",
        deployment,
        len(items),
        ", ".join(Path(i["bundle"]).name for i in items),
    )
    return items


REJECTION_FILE = "rejection.json"


def record_rejection(work: str | Path, stage: str, exc: BaseException) -> None:
    """Write ``<work>/rejection.json``: why this deployment and period has no certificate.

    Written by the failing task itself (the Airflow page lists these records, with a link to the
    Data Docs of a failed validation); removed again when a later run publishes the certificate.
    """
    import json

    from greencert.files import write_file
    from greencert.validation.gx import DATA_DOCS_DIR, failed_page

    folder = Path(work)
    docs = folder / DATA_DOCS_DIR
    page = None
    if (docs / "index.html").is_file() and (folder / "validation.failed.json").is_file():
        try:
            page = failed_page(docs, json.loads((folder / "validation.failed.json").read_bytes()))
        except (OSError, ValueError):
            page = None
    record = {
        "format": "greencert-rejection/1",
        "deployment": folder.parent.name,
        "interval": folder.name,
        "stage": stage,
        "error": type(exc).__name__,
        "message": str(getattr(exc, "problem", None) or exc),
        "where": getattr(exc, "where", None),
        "data_docs": f"{DATA_DOCS_DIR}/{page}" if page else None,
        "recorded_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        write_file(folder / REJECTION_FILE, json.dumps(record, sort_keys=True, indent=1).encode())
    except OSError:
        log.exception("could not record the rejection in %s", folder)


def validate(config_path: str, bundle: str, work: str) -> str:
    from greencert.config import load_config
    from greencert.errors import GreenCertError
    from greencert.pipeline import validate_stage

    try:
        return validate_stage(bundle, work, load_config(config_path).scheme_path)
    except GreenCertError as exc:
        record_rejection(work, "validate", exc)
        raise


def compute(config_path: str, bundle: str, validation: str, work: str) -> str:
    from greencert.config import load_config
    from greencert.errors import GreenCertError
    from greencert.pipeline import compute_stage

    try:
        return compute_stage(bundle, validation, work, load_config(config_path).scheme_path)
    except GreenCertError as exc:
        record_rejection(work, "compute", exc)
        raise


def grade(config_path: str, figures: str, work: str) -> str:
    from greencert.config import load_config
    from greencert.errors import GreenCertError
    from greencert.pipeline import grade_stage

    try:
        return grade_stage(figures, work, load_config(config_path).scheme_path)
    except GreenCertError as exc:
        record_rejection(work, "grade", exc)
        raise


def registry_for(config_path: str, registry: str | None = None) -> str:
    """The registry a run publishes into: the ``registry`` param when given, else the config's."""
    from greencert.config import load_config

    return registry or str(load_config(config_path).registry_path)


def publish(config_path: str, graded: str, bundle: str, validation: str, registry: str | None = None) -> str:
    from greencert.errors import GreenCertError
    from greencert.pipeline import publish_stage

    try:
        path = publish_stage(graded, bundle, validation, registry_for(config_path, registry))
    except GreenCertError as exc:
        record_rejection(Path(validation).parent, "publish", exc)
        raise
    (Path(validation).parent / REJECTION_FILE).unlink(missing_ok=True)  # this period has its certificate now
    return path


def certificate_event(cert_path: str, registry: str) -> dict[str, Any]:
    """Metadata of the asset event for one published certificate (grade and key figures)."""
    from greencert.assets import certificate_event_extra

    extra = certificate_event_extra(cert_path, registry)
    log.info(
        "asset event for %s: grade %s, %.6g kWh/Mtok, %.6g gCO2e/Mtok, coverage %s",
        extra["certificate_id"],
        extra["grade"],
        extra["energy_kwh_per_mtok"],
        extra["carbon_gco2e_per_mtok"],
        extra["coverage"],
    )
    return extra


def rebuild_registry_indexes(registries: list[str]) -> list[str]:
    """Rebuild ``index.json``/``index.html`` of each registry; return the index paths.

    Called by the registry-index DAG with the registries named by the triggering asset events.
    """
    import json

    from greencert.certificate.registry import rebuild_index
    from greencert.certificate.sign import load_signing_key

    # With the issuer key the rebuild also re-signs the registry's status (TUF timestamp): run
    # often enough (the DAG's hourly schedule) that readers always find a fresh one.
    key = load_signing_key()
    out = []
    for registry in sorted(set(registries)):
        index = rebuild_index(Path(registry), signing_key=key)
        counts = json.loads(index.read_bytes()).get("counts", {})
        log.info(
            "rebuilt index of %s: %d certificate(s) (%s)",
            registry,
            sum(counts.values()),
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
        )
        out.append(str(index))
    return out

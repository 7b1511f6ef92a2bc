"""Certify a whole fleet-day (one bundle per deployment) in one process, in bounded memory.

The per-bundle stages (``pipeline``) each open the bundle again and run every
GX suite on their own; that is right for one Airflow task per deployment but
slow for 50 deployments in one task. This runs the same building blocks in a
different order:

1. stream the bundles one at a time (the next one is read by a helper thread
   while the current one is profiled): read, per-device statistics
   (``profile_bundle``), figures (``pipeline.figures_document``, reusing the
   integrals of step 1) and the day's partial; then drop the samples. Only
   small frames and figures are kept, so memory is about one bundle's
   arrays whatever the fleet's size;
2. run every GX suite once over the stacked statistics of all bundles
   (``validation.batch``); meanwhile ``great_expectations`` was imported by a
   helper thread during step 1;
3. for each bundle that passed: write validation.json and figures.json, then
   ``pipeline.grade_stage`` and ``pipeline.publish_stage`` (signed
   certificate); save the partial. A bundle the stacked run did not pass is
   validated alone by ``pipeline.validate_stage`` (the usual report naming
   file, row and time) and, if it does pass alone, certified by the usual
   stages. Nothing is written for a bundle before it has passed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError

log = logging.getLogger("greencert")


@dataclass
class FleetRun:
    """Outcome of a fleet-day: certificates, failures (deployment -> reason), partials, phase times."""

    certificates: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    partials: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    gx_runs: int = 0
    device_energy_kwh: dict[str, float] = field(default_factory=dict)


@dataclass
class _Pending:
    """What is kept of one bundle after its samples are dropped."""

    deployment: str
    bundle_dir: Path
    inputs: list[dict[str, str]]
    stats: list[Any]
    rows: dict[str, int]
    coverage: float | None
    figures: dict[str, Any] | None
    partial: Any
    error: GreenCertError | None


def _profile_one(bundle_dir: Path, bundle: Any, scheme: Any, want_partial: bool) -> _Pending:
    from greencert.compute.partials import day_partial
    from greencert.pipeline import figures_document
    from greencert.validation.batch import SuiteStats
    from greencert.validation.run import profile_bundle

    items, coverage = profile_bundle(bundle, scheme)
    rows = {item.series.file: item.series.n_rows for item in items}
    suites = [{"evaluated_expectations": _suite_size(item.suite)} for item in items]
    figures = partial = None
    error = None
    try:
        # Computed now, while the samples are in memory; written only if validation passes.
        figures = figures_document(bundle, scheme, {"suites": suites, "rows": rows})
        if want_partial:
            partial = day_partial(bundle, scheme, {}, figures["methodology"])
    except GreenCertError as exc:
        error = exc
    return _Pending(
        bundle.manifest.scope.deployment,
        bundle_dir,
        bundle.inputs,
        [SuiteStats.of(item) for item in items],
        rows,
        coverage,
        figures,
        partial,
        error,
    )


_SUITE_SIZES: dict[str, int] = {}


def _suite_size(name: str) -> int:
    if name not in _SUITE_SIZES:
        from greencert.validation.run import expectations_dir

        data = json.loads((expectations_dir() / f"{name}.json").read_text(encoding="utf-8"))
        _SUITE_SIZES[name] = len(data["expectations"])
    return _SUITE_SIZES[name]


def certify_fleet_day(
    bundle_dirs: list[Path],
    registry: str | Path,
    work_dir: str | Path,
    scheme_path: str | Path | None = None,
    signing_key: str | Path | None = None,
    pdf: bool | None = False,
    partials_dir: str | Path | None = None,
) -> FleetRun:
    """Validate, compute, grade, sign and publish every bundle of a fleet-day."""
    from greencert.pipeline import _scheme
    from greencert.validation.batch import ValidatorProcess

    run = FleetRun()
    began = time.perf_counter()
    with ValidatorProcess() as validator:
        scheme = _scheme(scheme_path)
        pending = _stream(bundle_dirs, scheme, partials_dir is not None, run)
        run.seconds["read_profile_compute"] = time.perf_counter() - began
        mark = time.perf_counter()
        outcome = validator.validate({p.deployment: p.stats for p in pending})
    run.gx_runs = outcome.gx_runs
    run.seconds["validate_gx"] = time.perf_counter() - mark
    run.seconds["gx_in_child"] = outcome.seconds
    return _finish(
        pending, outcome, run, scheme, work_dir, registry, scheme_path, signing_key, pdf, partials_dir
    )


def _stream(bundle_dirs: list[Path], scheme: Any, want_partials: bool, run: FleetRun) -> list[_Pending]:
    """Read and profile the bundles one after the other; keep only their statistics and figures."""
    from greencert.bundle import open_bundle

    pending: list[_Pending] = []
    # One reader thread: Parquet decoding and hashing release the GIL, so reading bundle
    # i+1 overlaps the numpy work on bundle i. At most two bundles are in memory.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="greencert-read") as pool:
        futures: list[Any] = [pool.submit(open_bundle, path) for path in bundle_dirs[:1]]
        for i, path in enumerate(bundle_dirs):
            if i + 1 < len(bundle_dirs):
                futures.append(pool.submit(open_bundle, bundle_dirs[i + 1]))
            try:
                bundle = futures[i].result()
            except GreenCertError as exc:
                run.failures[Path(path).name] = str(exc)
                continue
            finally:
                futures[i] = None  # drop the reference: memory stays bounded
            item = _profile_one(Path(path), bundle, scheme, want_partials)
            run.rows += sum(item.rows.values())
            pending.append(item)
            del bundle
    return pending


def _finish(
    pending: list[_Pending],
    outcome: Any,
    run: FleetRun,
    scheme: Any,
    work_dir: str | Path,
    registry: str | Path,
    scheme_path: str | Path | None,
    signing_key: str | Path | None,
    pdf: bool | None,
    partials_dir: str | Path | None,
) -> FleetRun:
    """Write and publish what passed; validate alone what the stacked run did not pass."""
    began = time.perf_counter()

    def one(p: _Pending) -> str:
        work = Path(work_dir) / p.deployment
        work.mkdir(parents=True, exist_ok=True)
        if p.error is not None:
            raise p.error
        cert = _publish_passed(p, outcome.passed[p.deployment], scheme, work, registry, signing_key, pdf)
        if partials_dir is not None and p.partial is not None:
            from greencert.compute.partials import save_partial

            validation = json.loads((work / "validation.json").read_text())
            summary = {
                "success": True,
                "expectations_evaluated": sum(s["evaluated_expectations"] for s in validation["suites"]),
                "rows": validation["rows"],
            }
            partial = dataclasses.replace(p.partial, validation=summary)
            run.partials[p.deployment] = str(save_partial(partial, Path(partials_dir)))
        return cert

    passed = [p for p in pending if p.deployment in outcome.passed and p.figures is not None]
    if passed:
        from greencert.certificate.sign import load_signing_key

        # Resolve the key before the threads start (a development key is created on first use).
        load_signing_key(signing_key)
    # Publishing is mostly waiting for fsync (every file is written atomically and durably):
    # a few threads overlap those waits. Each deployment writes its own folders; the shared
    # registry files (public keys, revocation list) are written atomically with equal content.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="greencert-publish") as pool:
        futures = {p.deployment: pool.submit(one, p) for p in passed}
    for p in pending:
        try:
            if p.deployment in futures:
                cert = futures[p.deployment].result()
            else:
                # Not passed by the stacked run: the usual per-bundle stages, one at a time.
                work = Path(work_dir) / p.deployment
                work.mkdir(parents=True, exist_ok=True)
                cert = _certify_alone(p, work, registry, scheme_path, signing_key, pdf)
        except GreenCertError as exc:
            run.failures[p.deployment] = str(exc)
            log.warning("fleet: %s not certified: %s", p.deployment, exc)
            continue
        run.certificates[p.deployment] = cert
        # Per-device energy of the power series, as validated (the statistics frame carries it).
        power = p.stats[0].frame
        run.device_energy_kwh.update(
            zip(power["device"].astype(str), power["energy_kwh"].astype(float), strict=True)
        )
    if run.certificates:
        from greencert.certificate.registry import rebuild_index

        rebuild_index(registry)  # once for the whole fleet-day, not once per certificate
    run.seconds["publish"] = time.perf_counter() - began
    run.seconds["total"] = sum(v for k, v in run.seconds.items() if k != "gx_in_child")
    return run


def _publish_passed(
    p: _Pending,
    suites: list[Any],
    scheme: Any,
    work: Path,
    registry: str | Path,
    signing_key: str | Path | None,
    pdf: bool | None,
) -> str:
    from greencert.pipeline import FIGURES_FILE, VALIDATION_FILE, _write_json, grade_stage, publish_stage
    from greencert.validation.run import ValidationReport

    report = ValidationReport(success=True, suites=suites, rows=p.rows, coverage=p.coverage)
    payload = report.to_dict()  # the same validation.json validate_stage writes
    payload["inputs"] = p.inputs
    payload["scheme"] = {"id": scheme.id, "version": scheme.version}
    (work / "validation.failed.json").unlink(missing_ok=True)
    validation = _write_json(work / VALIDATION_FILE, payload)
    figures = dict(p.figures or {})
    figures["data_quality"] = {
        **figures["data_quality"],
        "expectations_evaluated": sum(s["evaluated_expectations"] for s in payload["suites"]),
        "rows": payload["rows"],
    }
    figures_path = _write_json(work / FIGURES_FILE, figures)
    graded = grade_stage(figures_path, work, scheme.path)
    return publish_stage(graded, p.bundle_dir, validation, registry, signing_key, pdf, index=False)


def _certify_alone(
    p: _Pending,
    work: Path,
    registry: str | Path,
    scheme_path: str | Path | None,
    signing_key: str | Path | None,
    pdf: bool | None,
) -> str:
    """The usual per-bundle stages: canonical failure report, or a certificate if it passes alone."""
    from greencert.pipeline import compute_stage, grade_stage, publish_stage, validate_stage

    validation = validate_stage(p.bundle_dir, work, scheme_path)
    figures = compute_stage(p.bundle_dir, validation, work, scheme_path)
    graded = grade_stage(figures, work, scheme_path)
    return publish_stage(graded, p.bundle_dir, validation, registry, signing_key, pdf, index=False)


# ----------------------------------------------------------------------------- task bodies (monthly DAG)


def _day(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def days_of(start: Any, end: Any) -> list[str]:
    """The UTC days of [start, end) as YYYY-MM-DD (28-31 for a month)."""
    first, last = _day(start), _day(end)
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < last:
        if day >= first:
            days.append(f"{day:%Y-%m-%d}")
        day += dt.timedelta(days=1)
    return days


def certify_day_task(
    fleet_root: str | Path,
    day: str,
    registry: str | Path,
    work_root: str | Path,
    partials_root: str | Path,
    scheme_path: str | Path | None = None,
    simulate_scale: float | None = None,
) -> dict[str, str]:
    """One day of a month: certify the fleet-day, save each deployment's partial; return their paths.

    The day's bundles are ``<fleet_root>/<day>/<deployment>/``; with ``simulate_scale`` a missing
    day is simulated first (``greencert simulate --fleet``). Idempotent: reruns rewrite the same
    work folder, certificates and partial files.
    """
    from greencert.errors import ConfigError
    from greencert.sources.fleet import INDEX_NAME, FleetSpec, deployment_bundles, write_fleet_day

    start = _day(day)
    folder = Path(fleet_root) / f"{start:%Y-%m-%d}"
    if not (folder / INDEX_NAME).is_file():
        if simulate_scale is None:
            raise ConfigError("no fleet-day bundles for this day (fleet.json missing)", str(folder))
        write_fleet_day(FleetSpec(scale=simulate_scale), start, Path(fleet_root))
    run = certify_fleet_day(
        deployment_bundles(folder),
        registry,
        Path(work_root) / f"{start:%Y-%m-%d}",
        scheme_path,
        pdf=False,
        partials_dir=partials_root,
    )
    log.info(
        "fleet-day %s: %d certificates, %d failures, %s rows, phases %s",
        f"{start:%Y-%m-%d}",
        len(run.certificates),
        len(run.failures),
        f"{run.rows:,}",
        {k: round(v, 2) for k, v in run.seconds.items()},
    )
    for deployment, reason in run.failures.items():
        log.warning("fleet-day %s: %s not certified: %s", f"{start:%Y-%m-%d}", deployment, reason)
    return run.partials


def certify_month_task(
    partials_root: str | Path,
    start: Any,
    end: Any,
    registry: str | Path,
    work_root: str | Path,
    scheme_path: str | Path | None = None,
    signing_key: str | Path | None = None,
) -> dict[str, str]:
    """Combine each deployment's daily partials of [start, end) into its certificate for the period.

    A deployment missing a day (not certified that day) gets no certificate: the error names the
    day. Returns deployment -> certificate path; raises after trying every deployment if any failed.
    """
    from greencert.compute.partials import month_figures_document
    from greencert.config import interval_key
    from greencert.pipeline import (
        FIGURES_FILE,
        VALIDATION_FILE,
        _scheme,
        _write_json,
        grade_stage,
        publish_stage,
    )

    scheme = _scheme(scheme_path)
    days = days_of(start, end)
    key = interval_key(_day(start), _day(end))
    certificates: dict[str, str] = {}
    failures: dict[str, str] = {}
    for folder in sorted(p for p in Path(partials_root).iterdir() if p.is_dir()):
        paths = [folder / f"{day}.json" for day in days]
        missing = [p.stem for p in paths if not p.is_file()]
        if len(missing) == len(paths):
            continue  # not a deployment of this period
        if missing:
            failures[folder.name] = f"no partial for {len(missing)} day(s), first {missing[0]}"
            continue
        try:
            figures, _inputs, validation = month_figures_document(paths, scheme)
            work = Path(work_root) / "month" / key / folder.name
            work.mkdir(parents=True, exist_ok=True)
            validation_path = _write_json(work / VALIDATION_FILE, validation)
            figures_path = _write_json(work / FIGURES_FILE, figures)
            graded = grade_stage(figures_path, work, scheme.path)
            certificates[folder.name] = publish_stage(
                graded, folder, validation_path, registry, signing_key, pdf=False, index=False
            )
        except GreenCertError as exc:
            failures[folder.name] = str(exc)
    if certificates:
        from greencert.certificate.registry import rebuild_index

        rebuild_index(registry)
    if failures:
        raise GreenCertError(
            f"{len(failures)} deployment(s) without a certificate for {key}: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())),
            str(partials_root),
        )
    return certificates

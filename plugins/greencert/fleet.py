"""Certify a whole fleet-day (one bundle per deployment) in two processes, in bounded memory.

The per-bundle stages (``pipeline``) each open the bundle again and run every
GX suite on their own; that is right for one Airflow task per deployment but
slow for 50 deployments in one task. This runs the same building blocks in a
different order, on both cores:

1. a helper process starts at once and imports Great Expectations (seconds
   of pure-Python work) while this process begins reading. Then both take
   bundles from one shared queue (a pipe of bundle numbers: whoever is free
   takes the next) and stream them: read (the next bundle is read by a
   thread while the current one is profiled), per-device statistics
   (``profile_bundle``), figures (``pipeline.figures_document``, reusing the
   integrals of the statistics) and the day's partial; then the samples are
   dropped. Only small frames and figures are kept, so memory is about two
   bundles' arrays per process whatever the fleet's size;
2. the helper runs every GX suite once over the stacked statistics of all
   bundles (``validation.batch``), always in bundle order, so the reports do
   not depend on which process read which bundle;
3. each process publishes the bundles it read and that passed: validation.json
   and figures.json, then ``pipeline.grade_stage`` and
   ``pipeline.publish_stage`` (signed certificate), and the partial. A bundle
   the stacked run did not pass is validated alone by
   ``pipeline.validate_stage`` (the usual report naming file, row and time) in
   this process and, if it does pass alone, certified by the usual stages.
   Nothing is written for a bundle before it has passed.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError
from greencert.fleet_day import INDEX_NAME, deployment_bundles
from greencert.times import interval_key, to_utc

log = logging.getLogger("greencert")

PUBLISH_THREADS = 4  # publication mostly waits for fsync; a few threads overlap the waits


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
    read_by_helper: int = 0

    def merge(self, other: FleetRun) -> None:
        self.certificates.update(other.certificates)
        self.failures.update(other.failures)
        self.partials.update(other.partials)
        self.device_energy_kwh.update(other.device_energy_kwh)
        self.rows += other.rows


@dataclass(frozen=True)
class FleetJob:
    """What both processes of a fleet run need (plain paths and flags: it is sent to the helper)."""

    bundle_dirs: tuple[str, ...]
    registry: str
    work_dir: str
    scheme_path: str | None
    pdf: bool | None
    partials_dir: str | None


@dataclass
class _Pending:
    """What is kept of one bundle after its samples are dropped."""

    index: int  # position in FleetJob.bundle_dirs: the order of the stacked GX run
    deployment: str
    bundle_dir: Path
    inputs: list[dict[str, str]]
    stats: list[Any]
    rows: dict[str, int]
    coverage: float | None
    figures: dict[str, Any] | None
    partial: Any
    error: GreenCertError | None


@dataclass
class _HelperReport:
    """What the helper sends back once it has published its bundles."""

    run: FleetRun
    recheck: list[_Pending]  # its bundles the stacked run did not pass: certified alone by the parent
    read_seconds: float
    publish_seconds: float
    read_count: int


def _profile_one(index: int, bundle_dir: Path, bundle: Any, scheme: Any, want_partial: bool) -> _Pending:
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
        index,
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
        from greencert.validation.gx import expectations_dir

        data = json.loads((expectations_dir() / f"{name}.json").read_text(encoding="utf-8"))
        _SUITE_SIZES[name] = len(data["expectations"])
    return _SUITE_SIZES[name]


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to reuse freed memory instead of returning it to the kernel.

    Each bundle's arrays (a few MB each, dozens per bundle) are freed before the next
    bundle allocates the same sizes. By default glibc maps big blocks freshly and unmaps
    them on free, so every bundle paid page faults and kernel page zeroing again (about a
    tenth of a fleet run's CPU, `perf`). With these two settings a fleet process reuses its
    heap; peak memory is unchanged (the same sizes are reused). Process-wide, hence only
    in fleet runs; a no-op where mallopt(3) is not glibc's.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)  # blocks up to 64 MB come from the heap...
    mallopt(m_trim_threshold, 512 << 20)  # ...and the heap is not shrunk below 512 MB of free top


# ----------------------------------------------------------------------------- the shared queue


def _claimer(fd: int) -> Callable[[], int | None]:
    """Take the next bundle number from the shared pipe; None once it is empty and closed.

    Each number is one 4-byte record, written whole; a pipe read takes the records it returns
    under the pipe's lock, so two processes never take the same number.
    """

    def claim() -> int | None:
        data = os.read(fd, 4)
        if not data:
            return None
        if len(data) != 4:  # cannot happen with whole-record writes and reads
            raise RuntimeError(f"fleet queue: short read ({len(data)} bytes)")
        return int(struct.unpack("<I", data)[0])

    return claim


def _stream(
    job: FleetJob,
    scheme: Any,
    claim: Callable[[], int | None],
    run: FleetRun,
    on_pending: Callable[[_Pending], None] | None = None,
) -> list[_Pending]:
    """Read and profile the bundles this process claims; keep only their statistics and figures.

    ``on_pending`` sees each record as soon as it is made (the parent streams them to the helper).
    """
    from greencert.bundle import open_bundle

    want_partials = job.partials_dir is not None

    def next_bundle() -> tuple[int, Path, Any, GreenCertError | None] | None:
        index = claim()
        if index is None:
            return None
        path = Path(job.bundle_dirs[index])
        try:
            return index, path, open_bundle(path), None
        except GreenCertError as exc:
            return index, path, None, exc

    pending: list[_Pending] = []
    # One reader thread: Parquet decoding and hashing release the GIL, so reading bundle
    # i+1 overlaps the numpy work on bundle i. At most two bundles are in memory.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="greencert-read") as pool:
        future = pool.submit(next_bundle)
        while (got := future.result()) is not None:
            future = pool.submit(next_bundle)
            index, path, bundle, error = got
            got = None  # drop the reference: memory stays bounded
            if error is not None:
                run.failures[path.name] = str(error)
                continue
            item = _profile_one(index, path, bundle, scheme, want_partials)
            run.rows += sum(item.rows.values())
            pending.append(item)
            if on_pending is not None:
                on_pending(item)
            del bundle
    return pending


# ----------------------------------------------------------------------------- parent side


def certify_fleet_day(
    bundle_dirs: list[Path],
    registry: str | Path,
    work_dir: str | Path,
    scheme_path: str | Path | None = None,
    signing_key: str | Path | None = None,
    pdf: bool | None = False,
    partials_dir: str | Path | None = None,
    *,
    max_parent_bundles: int | None = None,
) -> FleetRun:
    """Validate, compute, grade, sign and publish every bundle of a fleet-day.

    ``max_parent_bundles`` stops this process taking bundles from the shared queue after
    that many (the helper reads the rest): for tests of the two-process split, and tuning.
    """
    from greencert.certificate.sign import load_signing_key
    from greencert.pipeline import _scheme

    job = FleetJob(
        tuple(str(p) for p in bundle_dirs),
        str(registry),
        str(work_dir),
        str(scheme_path) if scheme_path else None,
        pdf,
        str(partials_dir) if partials_dir is not None else None,
    )
    _keep_freed_memory()
    run = FleetRun()
    run.seconds = {"read_profile_compute": 0.0, "validate_gx": 0.0, "gx_in_child": 0.0, "publish": 0.0}
    began = time.perf_counter()
    with FleetHelper(job) as helper:
        # Resolved here, once: a development key is created on first use, and an Airflow
        # connection can only be read from the task's own process. The helper gets the key.
        key = load_signing_key(signing_key)
        helper.start(key)
        scheme = _scheme(scheme_path)
        claim = helper.claim
        if max_parent_bundles is not None:
            taken = 0

            def claim() -> int | None:
                nonlocal taken
                if taken >= max_parent_bundles:
                    return None
                taken += 1
                return helper.claim()

        # Each record goes to the helper as soon as it is made (not all at the end: the pickling
        # would lengthen the wait): it validates all bundles and publishes its share of them
        # (see _parent_share), while this process publishes the rest.
        pending = _stream(job, scheme, claim, run, helper.channel.send)
        run.seconds["read_profile_compute"] = time.perf_counter() - began
        mark = time.perf_counter()
        helper.channel.end_input()  # the helper's GX run starts now
        read = {p.index for p in pending}
        candidates = set(_parent_candidates(read, len(job.bundle_dirs)))
        prepared = _prepare([p for p in pending if p.index in candidates], scheme, key, job.pdf)
        run.seconds["prepare"] = time.perf_counter() - mark
        outcome = helper.channel.receive()
        run.seconds["validate_gx"] = time.perf_counter() - mark
        run.seconds["gx_in_child"] = outcome.seconds
        run.gx_runs = outcome.gx_runs
        mark = time.perf_counter()
        share = _parent_share(read, outcome, len(job.bundle_dirs))
        recheck = [p for p in pending if p.index not in outcome.passed]
        recheck += _publish_all(
            [p for p in pending if p.index in share], outcome, scheme, job, key, run, prepared
        )
        report = helper.report()
    run.merge(report.run)
    run.read_by_helper = report.read_count
    for p in [*recheck, *report.recheck]:
        # Not passed by the stacked run: the usual per-bundle stages, one at a time.
        try:
            work = Path(job.work_dir) / p.deployment
            work.mkdir(parents=True, exist_ok=True)
            run.certificates[p.deployment] = _certify_alone(p, work, job, key)
            _record_energies(p, run)
        except GreenCertError as exc:
            run.failures[p.deployment] = str(exc)
            log.warning("fleet: %s not certified: %s", p.deployment, exc)
    if run.certificates:
        from greencert.certificate.registry import rebuild_index
        from greencert.files import registry_root

        # Once for the whole fleet-day: log, metadata, index.
        rebuild_index(registry_root(registry), signing_key=key)
    run.seconds["publish"] = time.perf_counter() - mark
    run.seconds["helper_read"] = report.read_seconds
    run.seconds["helper_publish"] = report.publish_seconds
    run.seconds["total"] = time.perf_counter() - began
    return run


class FleetHelper:
    """The helper process of a fleet run (``python -m greencert.validation.worker fleet FD``).

    It imports Great Expectations first (on the second core, while this process
    reads), then takes bundles from the shared queue like this process does,
    validates the statistics of all bundles, and publishes its share. Messages
    are pickles on its stdin/stdout; the queue is a pipe both processes read.
    """

    def __init__(self, job: FleetJob) -> None:
        from greencert.validation.batch import HelperProcess

        self.job = job
        self.queue_read, queue_write = os.pipe()
        self.channel = HelperProcess("fleet", str(self.queue_read), pass_fds=(self.queue_read,))
        self.channel.what = "fleet helper process"
        records = b"".join(struct.pack("<I", i) for i in range(len(job.bundle_dirs)))

        def fill() -> None:
            # All numbers, then EOF: a pipe holds 64 KiB, so a very large fleet fills as it drains.
            try:
                _write_all(queue_write, records)
            except BrokenPipeError:
                pass  # every reader is gone (the run failed and closed the queue): nothing to fill
            finally:
                os.close(queue_write)

        self._filler = threading.Thread(target=fill, name="greencert-queue", daemon=True)
        self._filler.start()
        self.claim = _claimer(self.queue_read)

    def start(self, key: Any) -> None:
        self.channel.send((self.job, key.to_raw()))

    def report(self) -> _HelperReport:
        """Wait for the helper to publish its share."""
        report = self.channel.receive()
        self.channel.process.wait()
        return report

    def close(self) -> None:
        self.channel.close()
        os.close(self.queue_read)

    def __enter__(self) -> FleetHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, data: bytes) -> None:
    # Whole 4-byte records only (writes of <= PIPE_BUF bytes are atomic; 4096 is a multiple of 4).
    for start in range(0, len(data), 4096):
        os.write(fd, data[start : start + 4096])


# ----------------------------------------------------------------------------- helper side


def serve_helper(queue_fd: int) -> int:
    """Helper side of :class:`FleetHelper`."""
    from greencert.validation.batch import ChildSide, import_gx_quietly

    child = ChildSide()
    _keep_freed_memory()
    try:
        import_gx_quietly()  # first: the parent is reading meanwhile
        import greencert.certificate.issue  # noqa: F401
        import greencert.pipeline  # noqa: F401
        import greencert.validation.run  # noqa: F401

        setup = child.messages.get()
        if setup is None or isinstance(setup, BaseException):
            child.close()
            return 0 if setup is None else 1
        job, raw_key = setup
        _help(job, raw_key, _claimer(queue_fd), child.messages, child.send)
    except Exception as exc:  # sent back and raised in the parent
        child.send(exc)
    child.close()
    return 0


def _help(job: FleetJob, raw_key: Any, claim: Callable[[], int | None], messages: Any, send: Any) -> None:
    from greencert.certificate.sign import SigningKey
    from greencert.pipeline import _scheme
    from greencert.validation.batch import validate_batch

    key = SigningKey.from_raw(*raw_key)
    scheme = _scheme(job.scheme_path)
    run = FleetRun()
    began = time.perf_counter()
    pending = _stream(job, scheme, claim, run)
    read_seconds = time.perf_counter() - began
    theirs: dict[int, _Pending] = {}
    while (message := messages.get()) is not None:  # the parent's records, until its input ends
        if isinstance(message, BaseException):
            raise message
        theirs[message.index] = message
    everything = {**theirs, **{p.index: p for p in pending}}
    # Always in bundle order: the stacked reports do not depend on who read what.
    outcome = validate_batch({i: everything[i].stats for i in sorted(everything)})
    send(outcome)  # the parent publishes its share meanwhile
    began = time.perf_counter()
    share = _parent_share(set(theirs), outcome, len(job.bundle_dirs))
    recheck = [p for p in pending if p.index not in outcome.passed]
    mine = [everything[i] for i in sorted(everything) if i in outcome.passed and i not in share]
    recheck += _publish_all(mine, outcome, scheme, job, key, run)
    send(_HelperReport(run, recheck, read_seconds, time.perf_counter() - began, len(pending)))


# Share of a fleet-day's bundles the parent publishes (if it read them and they pass): it has
# prepared them during the GX run, so its part of the publication is quicker than the helper's.
PARENT_PUBLISH_SHARE = 0.6


def _parent_candidates(parent_read: set[int], n_bundles: int) -> list[int]:
    """The bundles the parent prepares before the verdict: the first of those it read."""
    return sorted(parent_read)[: round(PARENT_PUBLISH_SHARE * n_bundles)]


def _parent_share(parent_read: set[int], outcome: Any, n_bundles: int) -> set[int]:
    """The passed bundles the parent publishes; the helper publishes every other passed bundle.

    Both processes compute the same set (the helper has all pending records, the parent only
    its own), so publication runs on both cores.
    """
    return {i for i in _parent_candidates(parent_read, n_bundles) if i in outcome.passed}


# ----------------------------------------------------------------------------- publication


def _record_energies(p: _Pending, run: FleetRun) -> None:
    # Per-device energy of the power series, as validated (the statistics frame carries it).
    power = p.stats[0].frame
    run.device_energy_kwh.update(
        zip(power["device"].astype(str), power["energy_kwh"].astype(float), strict=True)
    )


def _publish_all(
    pending: list[_Pending],
    outcome: Any,
    scheme: Any,
    job: FleetJob,
    key: Any,
    run: FleetRun,
    prepared: dict[int, _Prepared] | None = None,
) -> list[_Pending]:
    """Publish ``pending`` (passed by the stacked run); return those without figures (certified alone)."""

    def one(p: _Pending, suites: list[Any]) -> str:
        work = Path(job.work_dir) / p.deployment
        work.mkdir(parents=True, exist_ok=True)
        if p.error is not None:
            raise p.error
        ready = (prepared or {}).get(p.index)
        cert = _publish_passed(p, suites, scheme, work, job.registry, key, job.pdf, ready)
        if job.partials_dir is not None and p.partial is not None:
            from greencert.compute.partials import save_partial

            partial = _validated_partial(p, sum(s.evaluated for s in suites))
            # The prepared bytes only if made from this very summary (same counts).
            data = None
            if (
                ready is not None
                and ready.partial is not None
                and ready.partial.validation == partial.validation
            ):
                data = ready.partial_json
            run.partials[p.deployment] = str(save_partial(partial, Path(job.partials_dir), data))
        return cert

    passed = [p for p in pending if p.figures is not None]
    # Each deployment writes its own folders; the shared registry files (public keys,
    # revocation list) are written atomically with equal content.
    with concurrent.futures.ThreadPoolExecutor(
        PUBLISH_THREADS, thread_name_prefix="greencert-publish"
    ) as pool:
        futures = {p.index: pool.submit(one, p, outcome.passed[p.index]) for p in passed}
    for p in passed:
        try:
            run.certificates[p.deployment] = futures[p.index].result()
        except GreenCertError as exc:
            run.failures[p.deployment] = str(exc)
            log.warning("fleet: %s not certified: %s", p.deployment, exc)
            continue
        _record_energies(p, run)
    return [p for p in pending if p.index not in futures]


def _validated_partial(p: _Pending, evaluated: int) -> Any:
    """The day's partial of a passed bundle, with the validation's summary."""
    summary = {"success": True, "expectations_evaluated": evaluated, "rows": p.rows}
    return dataclasses.replace(p.partial, validation=summary)


def _final_figures(p: _Pending, evaluated: int) -> dict[str, Any]:
    """figures.json of a passed bundle: its figures with the validation's counts."""
    figures = dict(p.figures or {})
    figures["data_quality"] = {**figures["data_quality"], "expectations_evaluated": evaluated, "rows": p.rows}
    return figures


@dataclass
class _Prepared:
    """Documents built for a bundle before its verdict (see _prepare): neither signed nor written."""

    figures: dict[str, Any]
    graded: dict[str, Any]
    certificate: Any  # certificate.issue.PreparedCertificate
    partial: Any = None  # the day's partial as it will be saved, and its bytes
    partial_json: bytes | None = None


def _prepare(pending: list[_Pending], scheme: Any, key: Any, pdf: bool | None) -> dict[int, _Prepared]:
    """Build (not sign, not write) the certificates of ``pending`` as if they pass validation.

    Run while the helper's GX run decides: after the verdict only the files remain to be
    written. A bundle that does not pass is simply not published; one whose preparation
    fails goes the usual way at publication (which raises the same error).
    """
    from greencert.certificate.issue import prepare_certificate
    from greencert.pipeline import graded_document

    prepared: dict[int, _Prepared] = {}
    for p in pending:
        if p.figures is None or p.error is not None:
            continue
        evaluated = sum(_suite_size(s.suite) for s in p.stats)
        try:
            figures = _final_figures(p, evaluated)
            # As publication will read it back from graded.json (sorted keys): the label lists
            # mappings in the document's order, so the bytes must come from the same document.
            graded = json.loads(json.dumps(graded_document(figures, scheme), sort_keys=True))
            ready = _Prepared(figures, graded, prepare_certificate(graded, key, pdf))
            if p.partial is not None:
                ready.partial = _validated_partial(p, evaluated)
                ready.partial_json = ready.partial.to_json()
            prepared[p.index] = ready
        except GreenCertError:
            continue
    return prepared


def _publish_passed(
    p: _Pending,
    suites: list[Any],
    scheme: Any,
    work: Path,
    registry: str | Path,
    key: Any,
    pdf: bool | None,
    ready: _Prepared | None = None,
) -> str:
    from greencert.pipeline import (
        FIGURES_FILE,
        GRADED_FILE,
        VALIDATION_FILE,
        _write_json,
        graded_document,
        publish_stage,
    )
    from greencert.validation.run import ValidationReport

    report = ValidationReport(success=True, suites=suites, rows=p.rows, coverage=p.coverage)
    payload = report.to_dict()  # the same validation.json validate_stage writes
    payload["inputs"] = p.inputs
    payload["scheme"] = {"id": scheme.id, "version": scheme.version}
    (work / "validation.failed.json").unlink(missing_ok=True)
    # Work files of this process only (the registry's copies are written durably): no fsync.
    validation = _write_json(work / VALIDATION_FILE, payload, durable=False)
    evaluated = sum(s["evaluated_expectations"] for s in payload["suites"])
    if ready is not None and ready.figures["data_quality"]["expectations_evaluated"] == evaluated:
        figures, graded, prepared = ready.figures, ready.graded, ready.certificate
    else:
        figures = _final_figures(p, evaluated)
        graded, prepared = graded_document(figures, scheme), None
    _write_json(work / FIGURES_FILE, figures, durable=False)
    graded_path = _write_json(work / GRADED_FILE, graded)
    return publish_stage(
        graded_path, p.bundle_dir, validation, registry, key, pdf, index=False, prepared=prepared
    )


def _certify_alone(p: _Pending, work: Path, job: FleetJob, key: Any) -> str:
    """The usual per-bundle stages: canonical failure report, or a certificate if it passes alone."""
    from greencert.pipeline import compute_stage, grade_stage, publish_stage, validate_stage

    validation = validate_stage(p.bundle_dir, work, job.scheme_path)
    figures = compute_stage(p.bundle_dir, validation, work, job.scheme_path)
    graded = grade_stage(figures, work, job.scheme_path)
    return publish_stage(graded, p.bundle_dir, validation, job.registry, key, job.pdf, index=False)


# ----------------------------------------------------------------------------- task bodies (monthly DAG)


def days_of(start: Any, end: Any) -> list[str]:
    """The UTC days of [start, end) as YYYY-MM-DD (28-31 for a month)."""
    first, last = to_utc(start), to_utc(end)
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

    start = to_utc(day)
    folder = Path(fleet_root) / f"{start:%Y-%m-%d}"
    if not (folder / INDEX_NAME).is_file():
        if simulate_scale is None:
            raise ConfigError("no fleet-day bundles for this day (fleet.json missing)", str(folder))
        # Here, not at the top: the simulator's numpy and pyarrow would delay every fleet run's start.
        from greencert.sources.fleet import FleetSpec, write_fleet_day

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
    key = interval_key(to_utc(start), to_utc(end))
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
        from greencert.files import registry_root

        rebuild_index(registry_root(registry), signing_key=signing_key)
    if failures:
        raise GreenCertError(
            f"{len(failures)} deployment(s) without a certificate for {key}: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())),
            str(partials_root),
        )
    return certificates

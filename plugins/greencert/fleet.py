"""Certify a whole fleet-day (one bundle per deployment) on a pool of worker processes.

The per-bundle stages (``pipeline``) each open the bundle again and run every
GX suite on their own; that is right for one Airflow task per deployment but
slow for 50 deployments in one task. This runs the same building blocks in a
different order, on a standard process pool
(``concurrent.futures.ProcessPoolExecutor``, one worker per core by default):

1. the workers start (forked from a fork server that imported GreenCert's
   stages once; not Great Expectations) and the bundles are cut into fixed chunks of
   consecutive bundle numbers; the pool hands each chunk to whichever worker
   is free. A worker streams its chunk: read (the next bundle is read by a
   thread while the current one is profiled), per-device statistics
   (``profile_bundle``), figures (``pipeline.figures_document``, reusing the
   integrals of the statistics) and the day's partial; then the samples are
   dropped. Only small frames and figures go back, so memory is about two
   bundles' arrays per worker whatever the fleet's size;
2. meanwhile this process imports Great Expectations (seconds of pure-Python
   work, once per run rather than once per worker), then runs every GX suite
   once over the stacked statistics of all bundles (``validation.batch``: one
   GX run costs about the same for 1 or 50 bundles, so stacking is what makes
   many bundles cheap);
3. the pool publishes the bundles that passed, chunk by chunk: validation.json
   and figures.json, then ``pipeline.grade_stage`` and
   ``pipeline.publish_stage`` (signed certificate), and the partial. A bundle
   the stacked run did not pass is validated alone by
   ``pipeline.validate_stage`` in this process (the usual report naming file,
   row and time) and, if it does pass alone, certified by the usual stages.
   Nothing is written for a bundle before it has passed;
4. this process rebuilds the registry index once for the whole fleet-day.

In a daemonic process (a Celery worker's task), which may not start processes,
the same tasks run one after the other in this process; Celery's mapped tasks
and worker concurrency are the parallelism there.

Every published byte is a function of the bundle alone, never of its chunk or
of the worker count (``validation.batch`` reports each bundle's own counts);
``tests/integration/test_fleet_day.py`` checks it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import resource
import time
from collections.abc import Iterable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError
from greencert.fleet_day import deployment_bundles  # noqa: F401  (re-exported: the CLI imports it here)
from greencert.pool import InThisProcess, may_start_processes, process_pool

log = logging.getLogger("greencert")

PUBLISH_THREADS = 4  # publication mostly waits for fsync; a few threads overlap the waits
# Chunks per worker: more than one lets a free worker take over when the other is slowed down
# (a shared machine); few, because each is a task the parent waits for in order.
CHUNKS_PER_WORKER = 2
# What the fork server imports once, so each worker starts with the stages imported (greencert/pool.py).
FORKSERVER_PRELOAD = ["greencert.validation.run", "greencert.certificate.issue", "greencert.pipeline"]


@dataclass
class FleetRun:
    """Outcome of a fleet-day: certificates, failures (deployment -> reason), partials, phase times.

    ``seconds``: wall times of this process (``gx_import``, ``read_profile_compute``: until the
    last chunk is read; ``validate_gx``: the stacked run; ``publish``; ``index``; ``total``) and
    the workers' times summed over workers and tasks (``worker_start``: the initializer's
    imports; ``worker_read``, ``worker_publish``). ``worker_peak_kb``: each worker's own peak RSS
    (pid -> KiB), ``worker_cpu_s`` its CPU seconds.
    """

    certificates: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    partials: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    gx_runs: int = 0
    device_energy_kwh: dict[str, float] = field(default_factory=dict)
    workers: int = 0
    chunks: int = 0
    worker_peak_kb: dict[int, int] = field(default_factory=dict)
    worker_cpu_s: dict[int, float] = field(default_factory=dict)

    def merge(self, other: FleetRun) -> None:
        self.certificates.update(other.certificates)
        self.failures.update(other.failures)
        self.partials.update(other.partials)
        self.device_energy_kwh.update(other.device_energy_kwh)
        self.rows += other.rows
        self.gx_runs += other.gx_runs
        for name, value in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + value


@dataclass(frozen=True)
class FleetJob:
    """What every worker needs (plain paths and flags: the pool sends it to each worker once)."""

    bundle_dirs: tuple[str, ...]
    registry: str
    work_dir: str
    scheme_path: str | None
    pdf: bool | None
    partials_dir: str | None


@dataclass
class _Pending:
    """What is kept of one bundle after its samples are dropped."""

    index: int  # position in FleetJob.bundle_dirs
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
class _ChunkResult:
    """What a worker returns for one task: what it read, or what it published."""

    run: FleetRun
    pid: int
    peak_kb: int  # the worker's ru_maxrss so far (Linux: KiB)
    cpu_s: float  # the worker's CPU time so far (user + system)
    pending: list[_Pending] = field(default_factory=list)  # read: statistics, figures, partials
    published: list[int] = field(default_factory=list)  # published: bundle numbers certified


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
    tenth of a fleet run's CPU, `perf`). With these two settings a worker reuses its
    heap; peak memory is unchanged (the same sizes are reused). Process-wide, hence only
    in fleet workers; a no-op where mallopt(3) is not glibc's.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)  # blocks up to 64 MB come from the heap...
    mallopt(m_trim_threshold, 512 << 20)  # ...and the heap is not shrunk below 512 MB of free top


def _stream(job: FleetJob, scheme: Any, indices: Iterable[int], run: FleetRun) -> list[_Pending]:
    """Read and profile the bundles ``indices``; keep only their statistics and figures."""
    from greencert.bundle import open_bundle

    want_partials = job.partials_dir is not None
    queue = iter(indices)

    def next_bundle() -> tuple[int, Path, Any, GreenCertError | None] | None:
        index = next(queue, None)
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
            del bundle
    return pending


# ----------------------------------------------------------------------------- this process


def fleet_chunks(n_bundles: int, workers: int, chunk_size: int | None = None) -> list[tuple[int, ...]]:
    """Consecutive bundle numbers in chunks of ``chunk_size`` (default: CHUNKS_PER_WORKER per worker)."""
    if chunk_size is None:
        chunk_size = max(1, math.ceil(n_bundles / (workers * CHUNKS_PER_WORKER)))
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    return [tuple(range(i, min(i + chunk_size, n_bundles))) for i in range(0, n_bundles, chunk_size)]


def certify_fleet_day(
    bundle_dirs: Sequence[str | Path],
    registry: str | Path,
    work_dir: str | Path,
    scheme_path: str | Path | None = None,
    signing_key: str | Path | None = None,
    pdf: bool | None = False,
    partials_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    chunk_size: int | None = None,
) -> FleetRun:
    """Validate, compute, grade, sign and publish every bundle of a fleet-day.

    ``workers``: processes of the pool (default: one per CPU, at most one per bundle);
    ``chunk_size``: bundles per task (default: see :func:`fleet_chunks`). Neither changes
    what is published, only how fast.
    """
    from greencert.certificate.sign import load_signing_key

    began = time.perf_counter()
    job = FleetJob(
        tuple(str(p) for p in bundle_dirs),
        str(registry),
        str(work_dir),
        str(scheme_path) if scheme_path else None,
        pdf,
        str(partials_dir) if partials_dir is not None else None,
    )
    run = FleetRun()
    # Resolved here, once: a development key is created on first use, and an Airflow
    # connection can only be read from the task's own process. The workers get the key.
    key = load_signing_key(signing_key)
    n_bundles = len(job.bundle_dirs)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    run.workers = min(workers or os.cpu_count() or 1, max(n_bundles, 1))
    chunks = fleet_chunks(n_bundles, run.workers, chunk_size)
    run.chunks = len(chunks)
    if chunks and may_start_processes():
        try:
            with process_pool(run.workers, FORKSERVER_PRELOAD, _start_worker, (job, key.to_raw())) as pool:
                _run_pool(pool, chunks, job, key, run)
        except BrokenProcessPool:
            raise GreenCertError(
                "a fleet worker process failed to start or ended abruptly (killed, out of memory? "
                "its stderr has the reason); nothing was indexed: rerun the fleet-day (it rewrites "
                "the same files)",
                str(job.work_dir),
            ) from None
    elif chunks:
        # A daemonic process may not start processes (a Celery worker's task runs in one): the
        # same tasks, one after the other, here. Parallelism is then Celery's (mapped tasks,
        # worker concurrency); the published bytes are the same (they never depend on workers).
        log.info("fleet: in a daemonic process (a Celery task?): no process pool, one process")
        run.workers = 1
        _start_worker(job, key.to_raw())
        _run_pool(InThisProcess(), chunks, job, key, run)
    if run.certificates:
        from greencert.certificate.registry import rebuild_index
        from greencert.files import registry_root

        mark = time.perf_counter()
        # Once for the whole fleet-day: log, metadata, index.
        rebuild_index(registry_root(registry), signing_key=key)
        run.seconds["index"] = time.perf_counter() - mark
    run.seconds["total"] = time.perf_counter() - began
    return run


def _run_pool(
    pool: concurrent.futures.Executor,
    chunks: list[tuple[int, ...]],
    job: FleetJob,
    key: Any,
    run: FleetRun,
) -> None:
    """Read on the pool, validate here (one stacked GX run), publish on the pool."""
    from greencert.validation.batch import validate_batch
    from greencert.validation.gx import import_gx_quietly

    mark = time.perf_counter()
    reads = [pool.submit(_read_chunk, chunk) for chunk in chunks]
    # The run's one Great Expectations import, here, while the workers read (they never
    # import GX: one import per run, not one per worker).
    import_gx_quietly(hide_sqlalchemy=True)
    run.seconds["gx_import"] = time.perf_counter() - mark
    pending: list[_Pending] = []
    for future in reads:
        result = future.result()
        _absorb(result, run)
        pending += result.pending
    run.seconds["read_profile_compute"] = time.perf_counter() - mark

    mark = time.perf_counter()
    # All bundles in one stacked run: one GX run costs about the same for 1 or 50 bundles.
    outcome = validate_batch({p.index: p.stats for p in sorted(pending, key=lambda p: p.index)})
    run.gx_runs = outcome.gx_runs
    run.seconds["validate_gx"] = time.perf_counter() - mark

    mark = time.perf_counter()
    by_index = {p.index: p for p in pending}
    publishable = {p.index for p in pending if p.index in outcome.passed and p.figures is not None}
    publishes = []
    for chunk in chunks:
        # The samples' statistics stay here (the energies are recorded from them below).
        ready = [dataclasses.replace(by_index[i], stats=[]) for i in chunk if i in publishable]
        if ready:
            suites = {p.index: outcome.passed[p.index] for p in ready}
            publishes.append(pool.submit(_publish_chunk, ready, suites))
    # Meanwhile, here (GX is loaded): the bundles the stacked run did not pass, one at a time.
    # (Also a bundle that passed but whose figures failed: the usual stages report why.)
    _certify_rejected([p for p in pending if p.index not in publishable], job, key, run)
    for future in publishes:
        result = future.result()
        _absorb(result, run)
        for index in result.published:
            _record_energies(by_index[index], run)
    run.seconds["publish"] = time.perf_counter() - mark


def _absorb(result: _ChunkResult, run: FleetRun) -> None:
    run.merge(result.run)  # the worker's phase times are added to this run's
    run.worker_peak_kb[result.pid] = max(run.worker_peak_kb.get(result.pid, 0), result.peak_kb)
    run.worker_cpu_s[result.pid] = max(run.worker_cpu_s.get(result.pid, 0.0), result.cpu_s)


def _certify_rejected(rejected: list[_Pending], job: FleetJob, key: Any, run: FleetRun) -> None:
    """Not passed by the stacked run: the usual per-bundle stages (canonical report naming the rows)."""
    for p in sorted(rejected, key=lambda p: p.index):
        try:
            work = Path(job.work_dir) / p.deployment
            work.mkdir(parents=True, exist_ok=True)
            run.certificates[p.deployment] = _certify_alone(p, work, job, key)
            _record_energies(p, run)
        except GreenCertError as exc:
            run.failures[p.deployment] = str(exc)
            log.warning("fleet: %s not certified: %s", p.deployment, exc)


# ----------------------------------------------------------------------------- worker side

_WORKER: dict[str, Any] = {}


def _start_worker(job: FleetJob, raw_key: tuple[bytes, bool, str]) -> None:
    """Pool initializer: once per worker, before its first task (no Great Expectations here).

    The imports are the fork server's (a no-op then); they stay for a spawned worker.
    """
    from greencert.certificate.sign import SigningKey
    from greencert.pipeline import _scheme

    began = time.perf_counter()
    _keep_freed_memory()
    import greencert.certificate.issue  # noqa: F401
    import greencert.validation.run  # noqa: F401

    _WORKER.update(job=job, key=SigningKey.from_raw(*raw_key), scheme=_scheme(job.scheme_path))
    _WORKER["start_seconds"] = time.perf_counter() - began  # reported with its first task


def _worker_run() -> FleetRun:
    run = FleetRun()
    run.seconds["worker_start"] = _WORKER.pop("start_seconds", 0.0)
    return run


def _read_chunk(indices: tuple[int, ...]) -> _ChunkResult:
    """Read, profile and compute the bundles ``indices``; their statistics, figures and partials."""
    run = _worker_run()
    mark = time.perf_counter()
    pending = _stream(_WORKER["job"], _WORKER["scheme"], indices, run)
    run.seconds["worker_read"] = time.perf_counter() - mark
    return _ChunkResult(run, os.getpid(), *_usage(), pending=pending)


def _publish_chunk(ready: list[_Pending], suites: dict[int, list[Any]]) -> _ChunkResult:
    """Publish the bundles ``ready``, passed by the stacked run with the results ``suites``."""
    run = _worker_run()
    mark = time.perf_counter()
    published = _publish_all(ready, suites, _WORKER["scheme"], _WORKER["job"], _WORKER["key"], run)
    run.seconds["worker_publish"] = time.perf_counter() - mark
    return _ChunkResult(run, os.getpid(), *_usage(), published=published)


def _usage() -> tuple[int, float]:
    """This worker's peak RSS (Linux: KiB) and CPU seconds so far (a fork server's workers are
    not this process's children, so RUSAGE_CHILDREN would not count them)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss, usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- publication


def _record_energies(p: _Pending, run: FleetRun) -> None:
    # Per-device energy of the power series, as validated (the statistics frame carries it).
    power = p.stats[0].frame
    run.device_energy_kwh.update(
        zip(power["device"].astype(str), power["energy_kwh"].astype(float), strict=True)
    )


def _publish_all(
    pending: list[_Pending],
    passed: dict[Any, list[Any]],
    scheme: Any,
    job: FleetJob,
    key: Any,
    run: FleetRun,
) -> list[int]:
    """Publish ``pending`` (passed by the stacked run, with figures); return the numbers published."""

    def one(p: _Pending, suites: list[Any]) -> str:
        work = Path(job.work_dir) / p.deployment
        work.mkdir(parents=True, exist_ok=True)
        if p.error is not None:
            raise p.error
        cert = _publish_passed(p, suites, scheme, work, job.registry, key, job.pdf)
        if job.partials_dir is not None and p.partial is not None:
            from greencert.compute.partials import save_partial

            partial = _validated_partial(p, sum(s.evaluated for s in suites))
            run.partials[p.deployment] = str(save_partial(partial, Path(job.partials_dir)))
        return cert

    # Each deployment writes its own folders; the shared registry files (public keys,
    # revocation list) are written atomically with equal content, by any worker.
    with concurrent.futures.ThreadPoolExecutor(
        PUBLISH_THREADS, thread_name_prefix="greencert-publish"
    ) as pool:
        futures = {p.index: pool.submit(one, p, passed[p.index]) for p in pending}
    published = []
    for p in pending:
        try:
            run.certificates[p.deployment] = futures[p.index].result()
        except GreenCertError as exc:
            run.failures[p.deployment] = str(exc)
            log.warning("fleet: %s not certified: %s", p.deployment, exc)
            continue
        published.append(p.index)
    return published


def _validated_partial(p: _Pending, evaluated: int) -> Any:
    """The day's partial of a passed bundle, with the validation's summary and its published figures."""
    summary = {"success": True, "expectations_evaluated": evaluated, "rows": p.rows}
    return dataclasses.replace(p.partial, validation=summary, figures=_final_figures(p, evaluated))


def _final_figures(p: _Pending, evaluated: int) -> dict[str, Any]:
    """figures.json of a passed bundle: its figures with the validation's counts."""
    figures = dict(p.figures or {})
    figures["data_quality"] = {**figures["data_quality"], "expectations_evaluated": evaluated, "rows": p.rows}
    return figures


def _publish_passed(
    p: _Pending,
    suites: list[Any],
    scheme: Any,
    work: Path,
    registry: str | Path,
    key: Any,
    pdf: bool | None,
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
    figures = _final_figures(p, evaluated)
    graded = graded_document(figures, scheme)
    _write_json(work / FIGURES_FILE, figures, durable=False)
    graded_path = _write_json(work / GRADED_FILE, graded)
    return publish_stage(graded_path, p.bundle_dir, validation, registry, key, pdf, index=False)


def _certify_alone(p: _Pending, work: Path, job: FleetJob, key: Any) -> str:
    """The usual per-bundle stages: canonical failure report, or a certificate if it passes alone."""
    from greencert.pipeline import compute_stage, grade_stage, publish_stage, validate_stage

    validation = validate_stage(p.bundle_dir, work, job.scheme_path)
    figures = compute_stage(p.bundle_dir, validation, work, job.scheme_path)
    graded = grade_stage(figures, work, job.scheme_path)
    return publish_stage(graded, p.bundle_dir, validation, job.registry, key, job.pdf, index=False)

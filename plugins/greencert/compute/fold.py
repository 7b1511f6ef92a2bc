"""One pass over the power series, shard by shard: everything validation and computation take from its rows.

The power series is read in device shards (``bundle/shards.py``). Each shard is folded into
per-device results, and the shard's rows are dropped before the next is read, so peak memory
is one shard's, whatever the number of rows (docs/streaming.md):

* the validation statistics (one row per device, ``validation/profile.meter_profile``);
* the energy and covered seconds per device and UTC hour (``compute/integrate``);
* the unbridged gaps with their neighbours' extremes (``compute/uncertainty.gap_intervals``);
* the sampling variance per device and hour (``compute/uncertainty``);
* the energy drawn in the idle steps of the token counters' interval (no output token), for the
  load regime (``compute/load_regime``): the idle steps are known from the token counters before
  the power is read, so only their runs are integrated; summed over devices as whole millijoules
  (exact integers, so the sum does not depend on how the devices were split).

Every per-device result comes from that device's rows alone, and sums over devices are taken
after the shards are stacked in device order, so a bundle folds to the same bits in one shard or in
many: the certificate does not depend on the shard size (``tests/unit/compute/test_fold.py``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from greencert.bundle.reader import Bundle, DeviceShards, Series
from greencert.compute.integrate import (
    Integrated,
    Kind,
    build_running,
    energy_of,
    energy_unit,
    evaluate,
    hour_edges,
    integrate_at,
    median_step,
    step_edges,
)
from greencert.compute.uncertainty import (
    GapBounds,
    GapIntervals,
    bounds_of_gaps,
    gap_intervals,
    load_defaults,
    sampling_variance_by_device,
)
from greencert.grading import effective_max_gap
from greencert.pool import may_start_processes, process_pool
from greencert.units import ENERGY, POWER, Q_, parse_unit
from greencert.validation.profile import Profile, meter_profile

if TYPE_CHECKING:
    from greencert.grading import Scheme

# Idle-time step energies are summed over devices as integers of this many joules: exact, so the
# sum is the same in any device order; a millijoule is 1e-7 of one GPU's 15-second step at 700 W.
IDLE_QUANTUM_J = 1e-3


@dataclass(frozen=True)
class FoldSpec:
    """What the fold computes, from the manifest and the scheme (hashable: the fold's cache key)."""

    kind: Kind
    to_base: float  # series unit -> W (gauge) or J (counter): validation's statistics
    to_kwh: float  # (series unit x second) or the counter's unit -> kWh
    start: float
    end: float
    max_gap: float
    neighbours: int | None  # readings each side of a gap (scheme 2026.2+), None: no gap bounds
    idle_step: float | None  # the token counters' step, None: no idle time


@dataclass
class SeriesFold:
    """A device-keyed series (the power series, a meter) as the stages need it: per-device results
    stacked in device order. Gaps, noise and idle time are the power series' only (None for meters)."""

    spec: FoldSpec
    devices: list[str]
    n_rows: int
    n_shards: int
    profile: Profile  # validation statistics; ``integrated`` None when the rows are not usable
    gaps: GapIntervals | None
    noise_by_device_hour: np.ndarray | None  # (series unit x s)^2
    idle: IdleRuns | None
    idle_mj: np.ndarray | None  # int64, energy of each idle run over every device, in IDLE_QUANTUM_J

    @property
    def integrated(self) -> Integrated:
        if self.profile.integrated is None:
            raise ValueError("the power series has rows no integral can use (validation names them)")
        return self.profile.integrated

    def gap_bounds(self, ceiling: float | None = None) -> GapBounds:
        assert self.gaps is not None, "gap bounds need a scheme with measurement integrity"
        s = self.spec
        return bounds_of_gaps(self.gaps, s.to_kwh, s.start, s.end, hour_edges(s.start, s.end), ceiling)

    def sampling_variance_kwh2(self) -> np.ndarray:
        assert self.noise_by_device_hour is not None
        return self.noise_by_device_hour.sum(axis=0) * self.spec.to_kwh * self.spec.to_kwh

    def idle_energy_kwh(self) -> float:
        """Energy of the power series in the idle steps, every device (kWh)."""
        assert self.idle_mj is not None
        return float(int(self.idle_mj.sum()) * (IDLE_QUANTUM_J / 3.6e6))


@dataclass(frozen=True)
class IdleRuns:
    """The steps of the token counters' interval with no output token, as runs of consecutive steps."""

    step: float
    bounds: np.ndarray  # [a0, b0, a1, b1, ...]: run k is [a_k, b_k), strictly increasing
    seconds: float  # their total length


def idle_runs(bundle: Bundle, spec: FoldSpec) -> IdleRuns | None:
    """Steps (at the token counters' own interval) in which the counters show no output token."""
    if spec.idle_step is None:
        return None
    edges = step_edges(spec.start, spec.end, spec.idle_step)
    tok_run = build_running(bundle.tokens, "output_tokens", "counter", np.inf)
    tokens = np.diff(evaluate(tok_run, edges)[0].sum(axis=0))
    # Half a token of slack: counters are integers, interpolation at the edges is not.
    idle = tokens < 0.5
    change = np.diff(np.concatenate([[0], idle.astype(np.int8), [0]]))
    first, stop = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    bounds = np.column_stack([edges[first], edges[stop]]).reshape(-1)
    return IdleRuns(spec.idle_step, bounds, float(np.diff(edges)[idle].sum()))


def series_spec(
    spec: Any,
    start: float,
    end: float,
    max_gap: float,
    where: str,
    neighbours: int | None = None,
    idle_step: float | None = None,
) -> FoldSpec:
    """The fold of one series from its manifest entry (``kind``, ``unit``); ``where`` names it in errors."""
    kind: Kind = "gauge" if spec.kind == "gauge" else "counter"
    if kind == "gauge":
        unit = parse_unit(spec.unit, POWER, f"{where}.unit")
        to_base = float(Q_(1.0, unit).to("W").magnitude)
        to_kwh = float(Q_(1.0, f"({unit}) * second").to("kWh").magnitude)
    else:
        unit = parse_unit(spec.unit, ENERGY, f"{where}.unit")
        to_base = float(Q_(1.0, unit).to("J").magnitude)
        to_kwh = float(Q_(1.0, unit).to("kWh").magnitude)
    return FoldSpec(kind, to_base, to_kwh, start, end, max_gap, neighbours, idle_step)


def fold_spec(bundle: Bundle, scheme: Scheme) -> FoldSpec:
    """The power series' fold: statistics and integrals, and under 2026.2+ gaps, noise and idle time."""
    m = bundle.manifest
    integrity = getattr(scheme, "integrity", None)
    neighbours = int(load_defaults(integrity.defaults)["gap_neighbours"]) if integrity is not None else None
    return series_spec(
        m.power,
        m.period.start.timestamp(),
        m.period.end.timestamp(),
        effective_max_gap(m.power, scheme),
        "power",
        neighbours,
        median_step(bundle.tokens) if integrity is not None else None,
    )


def meter_fold(
    shards: DeviceShards, spec: Any, start: float, end: float, max_gap: float, where: str
) -> SeriesFold:
    """Statistics and integral of a meter series (node meters, PDUs, facility and IT meters), folded
    like the power series and kept on its index: validation and every layer that integrates it share it."""
    fold_of = series_spec(spec, start, end, max_gap, where)
    cached = shards.folds.get(fold_of)
    if cached is not None:
        return cached
    # Shared across the stages of one process like the power series' fold (_RECENT), keyed by the
    # file's bytes: a meter's fold depends on nothing else.
    key = (fold_of, shards.file, shards.sha256, tuple(shards.ranges)) if shards.sha256 else None
    cached = _RECENT.get(key) if key is not None else None
    if cached is None:
        cached = fold_series(shards, fold_of, None)
        if key is not None:
            _remember(key, cached)
    shards.folds[fold_of] = cached
    return cached


def series_energy(
    series: Series | DeviceShards, spec: Any, start: float, end: float, max_gap: float, where: str
) -> tuple[Integrated, str]:
    """``integrate.energy_of`` for a series read whole or in shards: the integral and its pint unit."""
    if isinstance(series, Series):
        return energy_of(series, spec, start, end, max_gap, where)
    return meter_fold(series, spec, start, end, max_gap, where).integrated, energy_unit(spec, where)


# The last folds of this process, keyed by the bundle's file hashes: the validate and compute
# stages open a bundle each (a stage can be retried alone), and in one process (``certify``, the
# CLI) the compute stage reuses the validate stage's fold of the same bytes instead of a second pass.
_RECENT: dict[tuple[Any, ...], SeriesFold] = {}
_RECENT_SIZE = 8  # a bundle's power series and its meters


def _remember(key: tuple[Any, ...], fold_of: SeriesFold) -> None:
    _RECENT[key] = fold_of
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.pop(next(iter(_RECENT)))


def power_fold(bundle: Bundle, scheme: Scheme, meanwhile: Callable[[], object] | None = None) -> SeriesFold:
    """The fold of ``bundle``'s power series under ``scheme``, computed once per bundle bytes and spec.

    ``meanwhile`` runs in this process while pool workers fold the shards (the validate stage
    imports Great Expectations then); it runs in any case, before the fold returns.
    """
    spec = fold_spec(bundle, scheme)
    cached = bundle.folds.get(spec)
    if cached is not None:
        if meanwhile is not None:
            meanwhile()
        return cached
    # The shard ranges are part of the key so that a fold is never reused across shard sizes (the
    # tests compare those); the hashes are those of every file the bundle holds.
    inputs = tuple((i["file"], i["sha256"]) for i in bundle.inputs)
    key = (spec, tuple(bundle.power.ranges), inputs) if inputs else None
    cached = _RECENT.get(key) if key is not None else None
    if cached is None:
        cached = fold(bundle, spec, meanwhile)
        if key is not None:
            _remember(key, cached)
    elif meanwhile is not None:
        meanwhile()
    bundle.folds[spec] = cached
    return cached


@dataclass
class _ShardResult:
    devices: list[str]
    frame: pd.DataFrame
    integrated: Integrated | None
    gaps: GapIntervals | None
    noise: np.ndarray | None
    idle_mj: np.ndarray | None


def _fold_shard(series: Series, spec: FoldSpec, idle: IdleRuns | None) -> _ShardResult:
    profile = meter_profile(series, spec.kind, spec.to_base, spec.start, spec.end, spec.max_gap)
    gaps = noise = None
    idle_mj: np.ndarray | None = None
    if profile.integrated is not None and spec.neighbours is not None:
        gaps = gap_intervals(series, spec.kind, spec.start, spec.end, spec.max_gap, spec.neighbours)
        edges = hour_edges(spec.start, spec.end)
        noise = sampling_variance_by_device(series, spec.kind, spec.start, spec.end, spec.max_gap, edges)
    if profile.integrated is not None and idle is not None:
        idle_mj = np.zeros(idle.bounds.size // 2, dtype=np.int64)
        if idle.bounds.size:
            # Columns 0, 2, 4... are the idle runs; the odd ones are the busy time between them.
            runs = integrate_at(series, "value", spec.kind, idle.bounds, spec.max_gap).per_hour[:, ::2]
            to_quanta = spec.to_kwh * 3.6e6 / IDLE_QUANTUM_J
            idle_mj = np.rint(runs * to_quanta).astype(np.int64).sum(axis=0)
    return _ShardResult(list(series.devices), profile.frame, profile.integrated, gaps, noise, idle_mj)


def fold(
    bundle: Bundle, spec: FoldSpec, meanwhile: Callable[[], object] | None = None, workers: int | None = None
) -> SeriesFold:
    """Fold every shard of ``bundle.power`` (see the module docstring).

    Two shards or more go to a process pool (``greencert/pool.py``, one worker per core by
    default), in runs of consecutive shards (a worker reads its own rows from the file); the
    results are stacked in device order, so they are the same bits as in one process.
    """
    return fold_series(bundle.power, spec, idle_runs(bundle, spec), meanwhile, workers)


def fold_series(
    shards: DeviceShards,
    spec: FoldSpec,
    idle_steps: IdleRuns | None,
    meanwhile: Callable[[], object] | None = None,
    workers: int | None = None,
) -> SeriesFold:
    """Fold every shard of one series (``fold`` for the power series, ``meter_fold`` for meters)."""
    n_workers = min(workers or os.cpu_count() or 1, shards.n_shards)
    if shards.whole is not None or n_workers < 2 or not may_start_processes():
        if meanwhile is not None:
            meanwhile()
        results = [_fold_shard(series, spec, idle_steps) for series in shards.shards()]
        return combine(results, shards.devices, shards.n_rows, spec, idle_steps)
    runs = _runs(shards.ranges, n_workers * RUNS_PER_WORKER)
    with process_pool(n_workers, FOLD_PRELOAD) as pool:
        futures = [pool.submit(_fold_run, shards.reader(), run, spec, idle_steps) for run in runs]
        if meanwhile is not None:
            meanwhile()
        results = [r for f in futures for r in f.result()]
    return combine(results, shards.devices, shards.n_rows, spec, idle_steps)


# Runs of consecutive shards per worker: more than one lets a free worker take over when the other
# is slowed down (a shared machine); few, because each costs a task round trip.
RUNS_PER_WORKER = 3
FOLD_PRELOAD = ["greencert.compute.fold"]


def _runs(ranges: list[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    """``ranges`` cut into at most ``n`` runs of consecutive shards, about equal in shards."""
    n = max(1, min(n, len(ranges)))
    bounds = [round(k * len(ranges) / n) for k in range(n + 1)]
    return [ranges[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _fold_run(
    reader: DeviceShards, run: list[tuple[int, int]], spec: FoldSpec, idle_steps: IdleRuns | None
) -> list[_ShardResult]:
    """A pool task: fold shards ``run`` of the file ``reader`` indexes, in order."""
    return [_fold_shard(reader.shard(lo, hi), spec, idle_steps) for lo, hi in run]


def combine(
    results: list[_ShardResult],
    devices: list[str],
    n_rows: int,
    spec: FoldSpec,
    idle_steps: IdleRuns | None,
) -> SeriesFold:
    """Stack the shards' per-device results in device order (``devices``, sorted) and add their sums."""
    if len(results) == 1:
        r = results[0]
        return SeriesFold(
            spec,
            devices,
            n_rows,
            1,
            Profile(r.frame, r.integrated),
            r.gaps,
            r.noise,
            idle_steps,
            r.idle_mj,
        )
    number = {name: i for i, name in enumerate(devices)}
    maps = [np.array([number[d] for d in r.devices], dtype=np.int64) for r in results]
    order = np.argsort(np.concatenate(maps), kind="stable")
    frame = pd.concat([r.frame for r in results], ignore_index=True).iloc[order].reset_index(drop=True)
    usable = all(r.integrated is not None for r in results)
    integrated = None
    if usable:
        first: Any = results[0].integrated
        integrated = Integrated(
            list(devices),
            first.edges,
            np.concatenate([r.integrated.per_hour for r in results if r.integrated is not None])[order],
            np.concatenate([r.integrated.covered_seconds for r in results if r.integrated is not None])[
                order
            ],
        )
    else:
        # As for a file read whole: no coverage or energy while any device's rows are unusable.
        frame["coverage"] = -1.0
        frame["energy_kwh"] = -1.0
    gaps = noise = idle = None
    if usable and spec.neighbours is not None:
        gaps = GapIntervals.combine([r.gaps for r in results if r.gaps is not None], maps)
        noise = np.concatenate([r.noise for r in results if r.noise is not None])[order]
    if usable and idle_steps is not None:
        idle = np.asarray(
            np.sum([r.idle_mj for r in results if r.idle_mj is not None], axis=0), dtype=np.int64
        )
    return SeriesFold(
        spec, devices, n_rows, len(results), Profile(frame, integrated), gaps, noise, idle_steps, idle
    )

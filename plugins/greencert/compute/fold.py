"""One pass over the power series, shard by shard: everything validation and computation take from its rows.

The power series is read in device shards (``bundle/shards.py``). Each shard is folded into
per-device results, and the shard's rows are dropped before the next is read, so peak memory
is one shard's, whatever the number of rows (docs/streaming.md):

* the validation statistics (one row per device, ``validation/profile.meter_profile``);
* the energy and covered seconds per device and UTC hour (``compute/integrate``);
* the unbridged gaps with their neighbours' extremes (``compute/uncertainty.gap_intervals``);
* the sampling variance per device and hour (``compute/uncertainty``);
* the energy of every step of the token counters' interval, for idle time (``compute/load_regime``),
  summed over devices as whole millijoules (exact integers, so the sum does not depend on how the
  devices were split).

Every per-device result comes from that device's rows alone, and sums over devices are taken
after the shards are stacked in device order, so a bundle folds to the same bits in one shard or in
many: the certificate does not depend on the shard size (``tests/unit/compute/test_fold.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from greencert.bundle.reader import Bundle, Series
from greencert.compute.integrate import Integrated, Kind, hour_edges, integrate_at, median_step, step_edges
from greencert.compute.uncertainty import (
    GapBounds,
    GapIntervals,
    bounds_of_gaps,
    gap_intervals,
    load_defaults,
    sampling_variance_by_device,
)
from greencert.grading import effective_max_gap
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
class PowerFold:
    """The power series as the stages need it: per-device results stacked in device order."""

    spec: FoldSpec
    devices: list[str]
    n_rows: int
    n_shards: int
    profile: Profile  # validation statistics; ``integrated`` None when the rows are not usable
    gaps: GapIntervals | None
    noise_by_device_hour: np.ndarray | None  # (series unit x s)^2
    idle_edges: np.ndarray | None
    idle_step_mj: np.ndarray | None  # int64, energy of each step over every device, in IDLE_QUANTUM_J

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

    def idle_step_energy_kwh(self) -> np.ndarray:
        assert self.idle_step_mj is not None
        return self.idle_step_mj.astype(np.float64) * (IDLE_QUANTUM_J / 3.6e6)


def fold_spec(bundle: Bundle, scheme: Scheme) -> FoldSpec:
    m = bundle.manifest
    spec = m.power
    kind: Kind = "gauge" if spec.kind == "gauge" else "counter"
    if kind == "gauge":
        unit = parse_unit(spec.unit, POWER, "power.unit")
        to_base = float(Q_(1.0, unit).to("W").magnitude)
        to_kwh = float(Q_(1.0, f"({unit}) * second").to("kWh").magnitude)
    else:
        unit = parse_unit(spec.unit, ENERGY, "power.unit")
        to_base = float(Q_(1.0, unit).to("J").magnitude)
        to_kwh = float(Q_(1.0, unit).to("kWh").magnitude)
    integrity = getattr(scheme, "integrity", None)
    neighbours = int(load_defaults(integrity.defaults)["gap_neighbours"]) if integrity is not None else None
    return FoldSpec(
        kind,
        to_base,
        to_kwh,
        m.period.start.timestamp(),
        m.period.end.timestamp(),
        effective_max_gap(spec, scheme),
        neighbours,
        median_step(bundle.tokens) if integrity is not None else None,
    )


def power_fold(bundle: Bundle, scheme: Scheme) -> PowerFold:
    """The fold of ``bundle``'s power series under ``scheme``, computed once per bundle and spec."""
    spec = fold_spec(bundle, scheme)
    cached = bundle.folds.get(spec)
    if cached is None:
        cached = fold(bundle, spec)
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


def _fold_shard(series: Series, spec: FoldSpec, idle_edges: np.ndarray | None) -> _ShardResult:
    profile = meter_profile(series, spec.kind, spec.to_base, spec.start, spec.end, spec.max_gap)
    gaps = noise = idle = None
    if profile.integrated is not None and spec.neighbours is not None:
        gaps = gap_intervals(series, spec.kind, spec.start, spec.end, spec.max_gap, spec.neighbours)
        edges = hour_edges(spec.start, spec.end)
        noise = sampling_variance_by_device(series, spec.kind, spec.start, spec.end, spec.max_gap, edges)
    if profile.integrated is not None and idle_edges is not None:
        steps = integrate_at(series, "value", spec.kind, idle_edges, spec.max_gap).per_hour
        to_quanta = spec.to_kwh * 3.6e6 / IDLE_QUANTUM_J
        idle = np.rint(steps * to_quanta).astype(np.int64).sum(axis=0)
    return _ShardResult(list(series.devices), profile.frame, profile.integrated, gaps, noise, idle)


def fold(bundle: Bundle, spec: FoldSpec) -> PowerFold:
    """Fold every shard of ``bundle.power`` (see the module docstring)."""
    shards = bundle.power
    idle_edges = step_edges(spec.start, spec.end, spec.idle_step) if spec.idle_step is not None else None
    results = [_fold_shard(series, spec, idle_edges) for series in shards.shards()]
    return combine(results, shards.devices, shards.n_rows, spec, idle_edges)


def combine(
    results: list[_ShardResult],
    devices: list[str],
    n_rows: int,
    spec: FoldSpec,
    idle_edges: np.ndarray | None,
) -> PowerFold:
    """Stack the shards' per-device results in device order (``devices``, sorted) and add their sums."""
    if len(results) == 1:
        r = results[0]
        return PowerFold(
            spec,
            devices,
            n_rows,
            1,
            Profile(r.frame, r.integrated),
            r.gaps,
            r.noise,
            idle_edges,
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
    if usable and idle_edges is not None:
        idle = np.asarray(
            np.sum([r.idle_mj for r in results if r.idle_mj is not None], axis=0), dtype=np.int64
        )
    return PowerFold(
        spec, devices, n_rows, len(results), Profile(frame, integrated), gaps, noise, idle_edges, idle
    )

"""Vectorised integration of metered series, split exactly at hour boundaries.

Every series is held as flat arrays grouped by device (see ``bundle.reader``).
Rather than looping over rows, we build the running integral ``E`` over all
rows at once (one ``cumsum``) and evaluate it at the query times with a binary
search in each device's block (a few dozen queries per device, so the search
costs nothing next to the passes over the rows). The energy of device d in
[a, b) is then ``E_d(b) - E_d(a)``; cross-device terms cancel. Between two
samples ``E`` is the exact integral of the piecewise-linear power curve
(trapezoid rule), so a boundary falling between samples is interpolated.

Gauges (instantaneous power): a segment longer than ``max_gap`` is not
bridged; it contributes neither energy nor covered time.
Counters (cumulative energy or tokens): the increase of each step is taken as
Prometheus ``increase()`` does: a drop is a reset and the new value is the
increase since the reset. Counter steps are always bridged (the counter
measured what happened during the gap); time inside gaps longer than
``max_gap`` is still reported as ``bridged_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from greencert.bundle.reader import Series
from greencert.units import ENERGY, POWER, parse_unit

Kind = Literal["gauge", "counter"]


@dataclass(frozen=True)
class Running:
    """Running integral of one value column of a series, ready for queries."""

    t: np.ndarray
    cum: np.ndarray  # cum[i] = integral up to row i (cumulative over all rows)
    cum_cov: np.ndarray  # covered seconds up to row i
    seg: np.ndarray  # per segment i -> i+1 quantity (0 where not valid)
    seg_valid: np.ndarray
    v: np.ndarray
    dt: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    kind: Kind


def counter_increments(v: np.ndarray) -> np.ndarray:
    """Per-step increase of a cumulative counter, resets handled as Prometheus does."""
    step = v[1:] - v[:-1]
    return np.where(step >= 0, step, v[1:])


def build_running(series: Series, column: str, kind: Kind, max_gap: float) -> Running:
    t = series.t
    v = series.values[column]
    starts, ends = series.device_bounds()
    if t.size == 0:
        raise ValueError("empty series")
    # Step lengths are shared with validation (computed once per series).
    dt = series.cache.get("dt")
    if dt is None:
        dt = t[1:] - t[:-1]
        series.cache["dt"] = dt
    # A step joins two rows of one device unless it crosses into the next device's block
    # (rows are grouped by device): that is the step just before each device's first row.
    valid = dt > 0
    valid[starts[1:] - 1] = False
    if kind == "gauge":
        valid &= dt <= max_gap
        # 0.5 * (v0 + v1) * dt, evaluated in place in the same order (bit-identical).
        seg = v[1:] + v[:-1]
        seg *= 0.5
        seg *= dt
    else:
        seg = counter_increments(v)
    invalid = np.flatnonzero(~valid)  # few: device changes and gaps
    seg[invalid] = 0.0
    cov = dt.copy()
    cov[invalid] = 0.0
    cum = np.empty(t.size, dtype=np.float64)
    cum[0] = 0.0
    np.cumsum(seg, out=cum[1:])
    cum_cov = np.empty(t.size, dtype=np.float64)
    cum_cov[0] = 0.0
    np.cumsum(cov, out=cum_cov[1:])
    return Running(t, cum, cum_cov, seg, valid, v, dt, starts, ends, kind)


def evaluate(run: Running, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running integral and covered seconds of every device at every query time.

    Returns two arrays of shape (n_devices, n_times). Before a device's first
    sample the value is that first sample's; after its last, the last's: time
    outside the samples is neither integrated nor covered (no extrapolation).
    """
    n_dev = run.starts.size
    times = np.asarray(times, dtype=np.float64)
    # Last sample at or before each query time, device by device: a binary search in
    # each device's own (time-ordered) block, a few dozen queries per device.
    idx = np.empty((n_dev, times.size), dtype=np.int64)
    for d, (s, e) in enumerate(zip(run.starts.tolist(), run.ends.tolist(), strict=True)):
        idx[d] = np.searchsorted(run.t[s:e], times, side="right") + (s - 1)
    first = run.starts[:, None]
    last = run.ends[:, None] - 1
    before = idx < first
    after = idx >= last
    inside = ~(before | after)
    i = np.clip(idx, 0, run.t.size - 2 if run.t.size > 1 else 0)
    e = np.where(before, run.cum[first], np.where(after, run.cum[last], run.cum[i]))
    c = np.where(before, run.cum_cov[first], np.where(after, run.cum_cov[last], run.cum_cov[i]))
    if run.t.size > 1:
        seg_i = np.minimum(i, run.seg.size - 1)
        ok = inside & run.seg_valid[seg_i]
        tau = np.where(ok, times[None, :] - run.t[i], 0.0)
        dt = np.where(ok, run.dt[seg_i], 1.0)
        if run.kind == "gauge":
            v0 = run.v[i]
            v1 = run.v[np.minimum(i + 1, run.v.size - 1)]
            partial = v0 * tau + 0.5 * (v1 - v0) * tau * tau / dt
        else:
            partial = run.seg[seg_i] * tau / dt
        e = e + np.where(ok, partial, 0.0)
        c = c + tau
    return e, c


def hour_edges(start: float, end: float) -> np.ndarray:
    """Period start, every whole UTC hour strictly inside the period, period end."""
    first = np.ceil(start / 3600.0) * 3600.0
    inner = np.arange(first, end, 3600.0)
    inner = inner[inner > start]
    return np.concatenate([[start], inner, [end]])


@dataclass(frozen=True)
class Integrated:
    """Per-device, per-hour integral (series unit x seconds for gauges, unit for counters)."""

    devices: list[str]
    edges: np.ndarray
    per_hour: np.ndarray  # (n_devices, n_hours)
    covered_seconds: np.ndarray  # (n_devices, n_hours)

    @property
    def per_device(self) -> np.ndarray:
        return self.per_hour.sum(axis=1)

    @property
    def total(self) -> float:
        return float(self.per_hour.sum())

    @property
    def hour_seconds(self) -> np.ndarray:
        return np.diff(self.edges)

    def coverage(self) -> float:
        """Covered share of (period x devices)."""
        possible = self.hour_seconds.sum() * len(self.devices)
        return float(self.covered_seconds.sum() / possible) if possible > 0 else 0.0


def _segments(series: Series, column: str, kind: Kind, max_gap: float) -> tuple[np.ndarray, ...]:
    """Per-step integral and covered seconds (0 where a step is not bridged), plus validity and dt.

    Arrays have one entry per row: entry i is the step from row i to row i+1,
    and the last entry is 0, so every row index is a valid slice start.
    """
    t = series.t
    v = series.values[column]
    starts, _ = series.device_bounds()
    dt = series.cache.get("dt")
    if dt is None:
        dt = t[1:] - t[:-1]
        series.cache["dt"] = dt
    valid = dt > 0
    valid[starts[1:] - 1] = False  # the step into the next device's block
    n = t.size
    seg = np.zeros(n, dtype=np.float64)
    if kind == "gauge":
        valid &= dt <= max_gap
        body = seg[:-1]
        # 0.5 * (v0 + v1) * dt, evaluated in place.
        np.add(v[1:], v[:-1], out=body)
        body *= 0.5
        body *= dt
    else:
        seg[:-1] = counter_increments(v)
    cov = np.zeros(n, dtype=np.float64)
    cov[:-1] = dt
    invalid = np.flatnonzero(~valid)  # few: device changes and gaps
    seg[invalid] = 0.0
    cov[invalid] = 0.0
    return seg, cov, valid, dt


def integrate(
    series: Series, column: str, kind: Kind, start: float, end: float, max_gap: float
) -> Integrated:
    """Integrate ``column`` of ``series`` over [start, end), split at UTC hours.

    Each hour's integral is the sum of the whole steps inside it (one
    ``np.add.reduceat`` over all devices and hours: a vectorised, pairwise sum
    of exactly those steps) plus the interpolated pieces of the steps cut by
    the hour's edges. Summing each hour's own steps, rather than differencing
    a running total, keeps every hour exact to the last bits: the same hour
    integrated within a day or within a month gives the same number.

    The result is kept on the series: validation (coverage, energy per device)
    and computation ask for the same integral, and it is computed once.
    """
    key = ("integral", column, kind, float(start), float(end), float(max_gap))
    cached = series.cache.get(key)
    if cached is not None:
        return cached
    result = integrate_at(series, column, kind, hour_edges(start, end), max_gap)
    series.cache[key] = result
    return result


def integrate_at(series: Series, column: str, kind: Kind, edges: np.ndarray, max_gap: float) -> Integrated:
    """:func:`integrate` between any increasing ``edges`` (hours, or the token counters' steps).

    Each device's figures come from its own rows only (its own binary searches and slices), so a
    device integrates to the same bits in a file read whole or in a shard of a few devices.
    """
    t = series.t
    v = series.values[column]
    if t.size == 0:
        raise ValueError("empty series")
    seg, cov, valid, dt = _segments(series, column, kind, max_gap)
    starts, ends = series.device_bounds()
    n_dev = starts.size
    # Last sample at or before each edge, device by device (a few dozen binary searches each).
    idx = np.empty((n_dev, edges.size), dtype=np.int64)
    for d, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        idx[d] = np.searchsorted(t[s:e], edges, side="right") + (s - 1)
    first = starts[:, None]
    last = ends[:, None] - 1
    inside = (idx >= first) & (idx < last)
    # Before its first sample a device's running integral stands at its first row, after its
    # last sample at its last row: no extrapolation.
    row = np.clip(idx, first, last)
    # Whole steps between consecutive edges: sums of seg[row[d, k]:row[d, k+1]].
    flat = row.ravel()
    sums = np.add.reduceat(seg, flat)
    cov_sums = np.add.reduceat(cov, flat)
    # reduceat gives seg[i] (not 0) for an empty slice i:i; and the last sum of a device runs
    # into the next device's rows. Keep only the pairs within a device, zero the empty ones.
    nonempty = (row[:, 1:] > row[:, :-1]).astype(np.float64)
    whole = sums.reshape(row.shape)[:, :-1] * nonempty
    whole_cov = cov_sums.reshape(row.shape)[:, :-1] * nonempty
    # The piece of the step that an edge cuts, from the step's start to the edge.
    i = np.minimum(row, t.size - 2) if t.size > 1 else row
    ok = inside & valid[i] if t.size > 1 else np.zeros_like(inside)
    tau = np.where(ok, edges[None, :] - t[i], 0.0)
    if t.size > 1:
        span = np.where(ok, dt[i], 1.0)
        if kind == "gauge":
            v0 = v[i]
            v1 = v[np.minimum(i + 1, v.size - 1)]
            piece = np.where(ok, v0 * tau + 0.5 * (v1 - v0) * tau * tau / span, 0.0)
        else:
            piece = np.where(ok, seg[i] * tau / span, 0.0)
    else:
        piece = np.zeros_like(tau)
    per_hour = whole + piece[:, 1:] - piece[:, :-1]
    covered = whole_cov + tau[:, 1:] - tau[:, :-1]
    return Integrated(series.devices, edges, per_hour, covered)


def energy_unit(spec: Any, where: str) -> str:
    """The pint unit of a gauge's or counter's integral: (W) * second for a power gauge, the energy unit of a counter."""
    if spec.kind == "gauge":
        return f"({parse_unit(spec.unit, POWER, f'{where}.unit')}) * second"
    return str(parse_unit(spec.unit, ENERGY, f"{where}.unit"))


def median_step(series: Series) -> float:
    """The median sampling step within a device (60 s when the series has none)."""
    same = series.device_codes[1:] == series.device_codes[:-1]
    steps = (series.t[1:] - series.t[:-1])[same]
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 60.0


def step_edges(start: float, end: float, step: float) -> np.ndarray:
    """``start``, every ``step`` after it inside the period, and ``end``."""
    edges = np.arange(start, end, step)
    return np.concatenate([edges, [end]])


def energy_of(
    series: Series, spec: Any, start: float, end: float, max_gap: float, where: str
) -> tuple[Integrated, str]:
    """Integrate a gauge or counter series; returns the integral and the pint unit of its values.

    ``spec`` is the manifest's entry for the series (``kind``, ``unit``); ``where`` names it in errors.
    """
    unit = energy_unit(spec, where)
    return integrate(
        series, "value", "gauge" if spec.kind == "gauge" else "counter", start, end, max_gap
    ), unit

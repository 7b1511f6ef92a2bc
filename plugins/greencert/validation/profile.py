"""Per-device statistics that make row-level expectations cheap and exact.

Running Great Expectations over tens of millions of raw rows costs minutes and
gigabytes. Every row-level rule GreenCert needs is a bound on a minimum, a
maximum or a count, so it holds for every row exactly when it holds for the
per-device aggregate:

    every value >= 0            <=>  per device, count(value < 0) == 0
    every value finite          <=>  per device, count(not finite) == 0
    every power <= limit        <=>  per device, max(power) <= limit
    every time in [lo, hi]      <=>  per device, min(t) >= lo and max(t) <= hi
    strictly increasing times   <=>  per device, count(t[i+1] <= t[i]) == 0

So one vectorised pass (``np.add.reduceat`` and friends over rows grouped by
device) builds a small frame with one row per device, and the GX suites in
``expectations/`` validate that frame. Nothing is sampled: each statistic is
computed from every row. When an expectation fails, :func:`locate` goes back
to the raw rows of the failing device to name the first offending row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from greencert.bundle.series import Series
from greencert.bundle.shards import DeviceShards
from greencert.compute.integrate import Integrated, Kind, counter_increments, integrate


@dataclass
class Profile:
    frame: pd.DataFrame
    integrated: Integrated | None


def _reduce(values: np.ndarray, starts: np.ndarray, ufunc: np.ufunc) -> np.ndarray:
    return ufunc.reduceat(values, starts) if values.size else np.zeros(starts.size)


def count_by_device(mask: np.ndarray, series: Series, offset: int = 0) -> np.ndarray:
    """Per-device number of True rows in ``mask`` (row ``i`` of the mask is row ``i + offset``).

    Offending rows are rare, so this finds them with one pass over a boolean
    array and counts only those: no per-row int64 array is built.
    """
    hits = np.flatnonzero(mask)
    n_dev = len(series.devices)
    if hits.size == 0:
        return np.zeros(n_dev, dtype=np.int64)
    return np.bincount(series.device_codes[hits + offset], minlength=n_dev).astype(np.int64)


def _within_device(series: Series, steps: np.ndarray) -> np.ndarray:
    """Keep only the steps i -> i+1 that join two rows of the same device."""
    codes = series.device_codes
    return steps[codes[steps + 1] == codes[steps]]


def step_seconds(series: Series) -> np.ndarray:
    """``t[i+1] - t[i]`` for every row pair, computed once per series (validation and integration share it)."""
    dt = series.cache.get("dt")
    if dt is None:
        dt = series.t[1:] - series.t[:-1]
        series.cache["dt"] = dt
    return dt


def _step_stats(series: Series, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Duplicate and out-of-order timestamps per device (steps inside a device only)."""
    dt = step_seconds(series)
    # Steps that do not advance are rare inside a device (and happen once at each device change).
    steps = _within_device(series, np.flatnonzero(dt <= 0))
    n_dev = len(series.devices)
    codes = series.device_codes[steps + 1]
    still = dt[steps] == 0
    return (
        np.bincount(codes[still], minlength=n_dev).astype(np.int64),
        np.bincount(codes[~still], minlength=n_dev).astype(np.int64),
    )


def _reset_share(series: Series, column: str, starts: np.ndarray, n_rows: np.ndarray) -> np.ndarray:
    v = series.values[column]
    steps = _within_device(series, np.flatnonzero(v[1:] < v[:-1]))
    drops = np.bincount(series.device_codes[steps + 1], minlength=len(series.devices)).astype(np.int64)
    return drops / np.maximum(n_rows - 1, 1)


def _all_finite(v: np.ndarray) -> bool:
    # A sum of finite numbers is finite unless it overflows; NaN or inf anywhere makes it
    # non-finite. So a finite sum proves every value finite in one fast pass; otherwise
    # the caller counts row by row.
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.sum(v)))


def base_profile(series: Series, columns: tuple[str, ...], label: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per device: row count and counts/bounds of every row-level rule."""
    cols, starts = _base_columns(series, columns, label)
    return pd.DataFrame(cols), starts


def _base_columns(series: Series, columns: tuple[str, ...], label: str) -> tuple[dict[str, Any], np.ndarray]:
    """The columns of :func:`base_profile` (the frame is built once, by the caller, when complete).

    Clean data takes the fast path (a few whole-array reductions); any hint of
    a problem switches to exact per-row counting, so the counts are the same
    either way.
    """
    starts, ends = series.device_bounds()
    n_rows = ends - starts
    t = series.t
    finite_t = _all_finite(t)
    n_bad_time = (
        np.zeros(starts.size, dtype=np.int64) if finite_t else count_by_device(~np.isfinite(t), series)
    )
    nonfinite = np.zeros(starts.size, dtype=np.int64)
    negative = np.zeros(starts.size, dtype=np.int64)
    for col in columns:
        v = series.values[col]
        if not _all_finite(v):
            nonfinite += count_by_device(~np.isfinite(v), series)
        if v.size and not np.min(v) >= 0:  # NaN compares False: count exactly
            negative += count_by_device(v < 0, series)
    dup, ooo = _step_stats(series, starts)
    if finite_t and not ooo.any():
        # Times increase within each device: the bounds are the first and last rows.
        t_min, t_max = t[starts], t[ends - 1]
    else:
        t_clean = np.where(np.isfinite(t), t, np.nan)
        bad_time = np.isnan(t_clean)
        t_min = _reduce(np.where(bad_time, np.inf, t_clean), starts, np.minimum)
        t_max = _reduce(np.where(bad_time, -np.inf, t_clean), starts, np.maximum)
    cols = {
        label: series.devices,
        "n_rows": n_rows.astype(np.int64),
        "n_bad_time": n_bad_time,
        "n_nonfinite": nonfinite,
        "n_negative": negative,
        "t_min": t_min,
        "t_max": t_max,
        "n_duplicate_time": dup,
        "n_out_of_order": ooo,
    }
    return cols, starts


def _usable(cols: Any) -> bool:
    return not any(
        np.asarray(cols[name]).any()
        for name in ("n_bad_time", "n_duplicate_time", "n_out_of_order", "n_nonfinite")
    )


def meter_profile(
    series: Series, kind: Kind, to_watts: float, start: float, end: float, max_gap: float
) -> Profile:
    """Profile of a power gauge (values x to_watts = W) or energy counter (x to_watts = J)."""
    # Columns are collected in a dict and the frame built once: pandas charges per column insert.
    frame, starts = _base_columns(series, ("value",), "device")
    v = series.values["value"]
    n_rows = frame["n_rows"]
    n_dev = starts.size
    if kind == "gauge":
        finite_v = v if _all_finite(v) else np.where(np.isfinite(v), v, -np.inf)
        peak = _reduce(finite_v, starts, np.maximum) * to_watts
        frame["reset_share"] = np.zeros(n_dev)
    else:
        # A counter's peak power is its largest increase per second between samples.
        same = series.device_codes[1:] == series.device_codes[:-1]
        dt = series.t[1:] - series.t[:-1]
        rate = np.zeros(v.size)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate[1:] = np.where(same & (dt > 0), counter_increments(v) / dt, 0.0)
        peak = _reduce(np.where(np.isfinite(rate), rate, np.inf), starts, np.maximum) * to_watts
        frame["reset_share"] = _reset_share(series, "value", starts, n_rows)
    frame["max_power_w"] = peak
    integrated = None
    if _usable(frame):
        integrated = integrate(series, "value", kind, start, end, max_gap)
        frame["coverage"] = integrated.covered_seconds.sum(axis=1) / (end - start)
        frame["energy_kwh"] = integrated.per_device * to_watts / 3.6e6
    else:
        frame["coverage"] = np.full(n_dev, -1.0)  # not computable: another expectation names why
        frame["energy_kwh"] = np.full(n_dev, -1.0)
    return Profile(pd.DataFrame(frame), integrated)


def _union_coverage(series: Series, start: float, end: float) -> float:
    """Share of [start, end) inside the union of the instances' sample spans (times increase within
    an instance here: :func:`_usable` held)."""
    starts, ends = series.device_bounds()
    lo = np.clip(series.t[starts], start, end)
    hi = np.clip(series.t[ends - 1], start, end)
    order = np.argsort(lo, kind="stable")
    covered, reach = 0.0, start
    for a, b in zip(lo[order], hi[order], strict=True):
        a = max(a, reach)
        if b > a:
            covered += b - a
            reach = b
    return covered / (end - start)


def _counter_coverage(
    series: Series,
    column: str,
    start: float,
    end: float,
    frame: dict[str, Any],
    starts: np.ndarray,
    increase_key: str,
) -> Integrated | None:
    """Coverage and increase per instance of a cumulative counter; the integration, or None if unusable."""
    if not _usable(frame):
        frame["coverage"] = np.full(starts.size, -1.0)
        frame[increase_key] = np.full(starts.size, -1.0)
        return None
    integrated = integrate(series, column, "counter", start, end, np.inf)
    frame["coverage"] = integrated.covered_seconds.sum(axis=1) / (end - start)
    if starts.size > 1:
        # Replaced pods and scale-out/in (and vLLM's request count split by finished_reason): the
        # deployment is covered where ANY of its instances counts (docs/prometheus.md, token chains),
        # so every instance is judged on the union.
        frame["coverage"] = np.full(starts.size, _union_coverage(series, start, end))
    frame[increase_key] = integrated.per_device
    return integrated


def token_profile(series: Series, start: float, end: float) -> Profile:
    frame, starts = _base_columns(series, ("output_tokens", "input_tokens"), "instance")
    n_rows = frame["n_rows"]
    frame["reset_share"] = np.maximum(
        _reset_share(series, "output_tokens", starts, n_rows),
        _reset_share(series, "input_tokens", starts, n_rows),
    )
    integrated = _counter_coverage(series, "output_tokens", start, end, frame, starts, "output_increase")
    return Profile(pd.DataFrame(frame), integrated)


def request_profile(series: Series, start: float, end: float) -> Profile:
    """The completed-requests counters (``requests_profile`` suite): checked like the token counters."""
    frame, starts = _base_columns(series, ("requests",), "instance")
    frame["reset_share"] = _reset_share(series, "requests", starts, frame["n_rows"])
    integrated = _counter_coverage(series, "requests", start, end, frame, starts, "requests_increase")
    return Profile(pd.DataFrame(frame), integrated)


def grid_profile(series: Series, start: float, end: float) -> Profile:
    frame, starts = _base_columns(series, ("intensity",), "series")
    t = series.t[np.isfinite(series.t)]
    first_hour = np.floor(start / 3600.0) * 3600.0
    expected = np.arange(first_hour, end, 3600.0)
    present = np.isin(expected, t)
    n = starts.size
    frame["n_missing_hours"] = np.full(n, int((~present).sum()), dtype=np.int64)
    frame["n_unaligned"] = np.full(n, int((np.mod(t, 3600.0) != 0).sum()), dtype=np.int64)
    v = series.values["intensity"]
    frame["max_intensity"] = np.full(n, float(np.max(np.where(np.isfinite(v), v, np.inf))))
    return Profile(pd.DataFrame(frame), None)


def locate(
    series: Series | DeviceShards, check: str, device: int, params: dict[str, float], kind: str = "gauge"
) -> str | None:
    """Name the first raw row of ``device`` that breaks ``check`` (file and line or row).

    A series read in shards reads the failing device's shard again (only that one).
    """
    if isinstance(series, DeviceShards):
        series, device = series.shard_of(device)
    starts, ends = series.device_bounds()
    s, e = int(starts[device]), int(ends[device])
    t = series.t[s:e]
    vals = list(series.values.values())
    hit: np.ndarray | None = None
    if check == "n_bad_time":
        hit = ~np.isfinite(t)
    elif check == "n_nonfinite":
        hit = np.zeros(t.size, bool)
        for v in vals:
            hit |= ~np.isfinite(v[s:e])
    elif check == "n_negative":
        hit = np.zeros(t.size, bool)
        for v in vals:
            hit |= v[s:e] < 0
    elif check in ("n_duplicate_time", "n_out_of_order"):
        dt = np.diff(t)
        hit = np.concatenate([[False], dt == 0 if check == "n_duplicate_time" else dt < 0])
    elif check == "t_min" and "earliest_allowed" in params:
        hit = t < params["earliest_allowed"]
    elif check == "t_max" and "latest_allowed" in params:
        hit = t > params["latest_allowed"]
    elif check == "max_power_w" and "max_device_power_w" in params and kind == "gauge":
        hit = vals[0][s:e] * params.get("to_watts", 1.0) > params["max_device_power_w"]
    elif check == "reset_share":
        hit = np.zeros(t.size, bool)
        for v in vals:
            hit[1:] |= np.diff(v[s:e]) < 0
    elif check == "coverage" and "period_start" in params:
        # The first uncovered stretch: a late first sample, a gap not bridged, an early last sample.
        gap = params.get("max_gap_seconds", 0.0)
        hit = np.zeros(t.size, bool)
        hit[0] = t[0] - params["period_start"] > gap
        if kind == "gauge":
            hit[1:] = np.diff(t) > gap
        if not hit.any():
            hit[-1] = params["period_end"] - t[-1] > gap
    elif check == "n_missing_hours" and "earliest_allowed" in params:
        hours = np.arange(params["earliest_allowed"], params["latest_allowed"] + 1.0, 3600.0)
        missing = hours[~np.isin(hours, t)]
        if missing.size == 0:
            return None
        first = pd.Timestamp(missing[0], unit="s", tz="UTC").isoformat()
        return f"{series.file} hour {first} ({missing.size} hour(s) missing)"
    if hit is None or not hit.any():
        return None
    i = s + int(np.argmax(hit))
    stamp = series.t[i]
    when = (
        pd.Timestamp(stamp, unit="s", tz="UTC").isoformat()
        if np.isfinite(stamp) and abs(stamp) < 1e11
        else f"{float(stamp):.15g} s, not a Unix time in seconds"
    )
    return f"{series.where_row(i)} (timestamp {when})"


def implausible_token_rate(
    series: Series, column: str, ceiling_per_second: float, min_step_seconds: float = 1.0
) -> tuple[int, float, float, float] | None:
    """The first step of a token counter whose increase implies more than ``ceiling_per_second``.

    Increases follow Prometheus ``increase()``: after a drop (a counter reset) the new
    value itself is the increase, so a "reset" to an absurd value is caught too. Steps
    shorter than ``min_step_seconds`` are judged over that length (scrape jitter can put
    two samples milliseconds apart). Non-finite values are left to the other checks.
    Returns (grouped row index, increase, step seconds, rate) or None.
    """
    t, v = series.t, series.values[column]
    if t.size < 2:
        return None
    same = series.device_codes[1:] == series.device_codes[:-1]
    prev, cur = v[:-1], v[1:]
    with np.errstate(invalid="ignore", over="ignore"):
        increase = np.where(cur >= prev, cur - prev, cur)
        step = t[1:] - t[:-1]
        rate = increase / np.maximum(step, min_step_seconds)
        bad = same & np.isfinite(rate) & (rate > ceiling_per_second)
    if not bad.any():
        return None
    i = int(np.argmax(bad))
    return i + 1, float(increase[i]), float(step[i]), float(rate[i])

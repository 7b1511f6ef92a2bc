"""What a certified figure depends on: the load regime of the period (docs/uncertainty.md).

The same model uses several times more energy per token at low concurrency than
at high (ML.ENERGY leaderboard v3), and one serving-engine upgrade can change
energy per token by tens of percent, so the certificate discloses:

* concurrency (requests in flight) from a running-requests gauge, time-weighted
  mean and percentiles, when the bundle has one (manifest ``concurrency:``);
* output and input tokens and their ratio, and the mean output rate;
* idle: the share of the period in which no output token was produced while
  power was drawn, and the energy drawn in that time;
* serving engine and version, model and precision, GPU type and count.

Everything is computed on whole arrays: the token counters and the power series
are evaluated on a common grid of steps with the same running-integral engine
that produces the certified figures (``compute.integrate``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from greencert.bundle.reader import Bundle, Series
from greencert.compute.fold import SeriesFold
from greencert.compute.integrate import median_step
from greencert.errors import BundleError
from greencert.units import significant


def check_concurrency(series: Series) -> None:
    """Finite, non-negative values, strictly increasing times per instance; else name the row."""
    v, t = series.values["value"], series.t
    for bad, problem in (
        (~np.isfinite(t), "timestamp is missing or not a number"),
        (~np.isfinite(v), "value is missing, NaN or infinite"),
        (v < 0, "value is negative (a count of running requests)"),
    ):
        if bad.any():
            raise BundleError(f"concurrency: {problem}", series.where_row(int(np.argmax(bad))))
    same = series.device_codes[1:] == series.device_codes[:-1]
    back = same & (t[1:] <= t[:-1])
    if back.any():
        raise BundleError(
            "concurrency: timestamps must strictly increase per instance (duplicate or out of order)",
            series.where_row(int(np.argmax(back)) + 1),
        )


def concurrency_stats(series: Series, start: float, end: float, max_gap: float) -> dict[str, Any]:
    """Time-weighted statistics of the summed gauge: each reading holds until the next one.

    The sum over instances is taken on a regular grid at the gauge's own median
    step; a grid point counts only when every instance has a reading no older
    than ``max_gap`` (coverage says how many did).
    """
    check_concurrency(series)
    step = median_step(series)
    grid = start + step * (np.arange(max(1, int(np.ceil((end - start) / step)))) + 0.5)
    grid = grid[grid < end]
    starts, ends = series.device_bounds()
    total = np.zeros(grid.size)
    valid = np.ones(grid.size, dtype=bool)
    # One vectorised searchsorted per instance (instances are few; rows are many).
    for lo, hi in zip(starts, ends, strict=True):
        t, v = series.t[lo:hi], series.values["value"][lo:hi]
        idx = np.searchsorted(t, grid, side="right") - 1
        ok = (idx >= 0) & (grid - t[np.maximum(idx, 0)] <= max_gap)
        valid &= ok
        total += np.where(ok, v[np.maximum(idx, 0)], 0.0)
    if not valid.any():
        raise BundleError(
            "concurrency: no time in the period where every instance has a recent reading", series.file
        )
    x = total[valid]
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {
        "mean": significant(x.mean(), 4),
        "p50": significant(p50, 4),
        "p90": significant(p90, 4),
        "p99": significant(p99, 4),
        "max": significant(x.max(), 4),
        "instances": len(series.devices),
        "step_seconds": significant(step, 4),
        "coverage": significant(valid.mean(), 4),
    }


def idle_time(power: SeriesFold) -> dict[str, Any]:
    """Steps (at the token counters' own interval) with no output token, and the power drawn in them.

    Both come from the fold (compute/fold.py): the idle steps from the token counters, the energy
    as every device's integral over them, summed over devices in whole millijoules; the share of
    energy is against the power series' whole integral over the period.
    """
    idle = power.idle
    assert idle is not None
    seconds = power.spec.end - power.spec.start
    idle_kwh = power.idle_energy_kwh()
    total_kwh = power.integrated.total * power.spec.to_kwh
    return {
        "step_seconds": idle.step,
        "share_of_period": idle.seconds / seconds,
        "series_energy_kwh": idle_kwh,
        "share_of_energy": idle_kwh / total_kwh if total_kwh > 0 else 0.0,
        "mean_power_w": idle_kwh * 3.6e6 / idle.seconds if idle.seconds > 0 else None,
    }


def load_regime(bundle: Bundle, fig: Any, power: SeriesFold) -> dict[str, Any]:
    m = bundle.manifest
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    out_tok = float(fig.output_tokens.to("token").magnitude)
    in_tok = float(fig.input_tokens.to("token").magnitude)
    facility_kwh = float(fig.facility_energy.to("kWh").magnitude)
    idle = idle_time(power)
    idle_facility = idle["share_of_energy"] * facility_kwh
    busy_tokens_mtok = out_tok / 1e6
    section: dict[str, Any] = {
        "tokens": {
            "output": significant(out_tok, 12),
            "input": significant(in_tok, 12),
            "input_per_output": significant(in_tok / out_tok, 4) if out_tok > 0 else None,
            "output_per_second": significant(out_tok / (end - start), 6),
        },
        "idle": {
            "definition": "steps of the token counters' interval with no output token while power was drawn",
            "step_seconds": significant(idle["step_seconds"], 4),
            "share_of_period": significant(idle["share_of_period"], 4),
            "share_of_energy": significant(idle["share_of_energy"], 4),
            "energy": {"value": significant(idle_facility, 6), "unit": "kWh"},
            "energy_basis": "share of the metered power drawn in idle steps x facility energy",
            "mean_power_of_series_w": None
            if idle["mean_power_w"] is None
            else significant(idle["mean_power_w"], 4),
        },
        "energy_per_million_tokens_excluding_idle": {
            "value": significant((facility_kwh - idle_facility) / busy_tokens_mtok, 6)
            if busy_tokens_mtok > 0
            else None,
            "unit": "kWh/Mtok",
            "note": "disclosure only; the certified and graded figure includes idle time",
        },
        "software": {
            k: v
            for k, v in {
                "serving_engine": m.scope.serving_engine,
                "engine_version": m.scope.engine_version,
                "model": m.scope.model,
                "precision": m.scope.precision,
                "driver_version": m.scope.driver_version,
            }.items()
            if v is not None
        },
        "hardware": {
            "description": m.scope.hardware,
            "gpu_type": m.scope.gpu_type,
            "gpu_count": m.scope.gpu_count or fig.devices,
            "gpu_count_basis": "declared" if m.scope.gpu_count else "metered devices",
        },
    }
    if bundle.concurrency is not None:
        stats = concurrency_stats(bundle.concurrency, start, end, power.spec.max_gap)
        stats["source"] = bundle.concurrency.file
        if m.concurrency is not None and m.concurrency.metric:
            stats["metric"] = m.concurrency.metric
        section["concurrency"] = stats
    else:
        section["concurrency"] = {"available": False, "note": "the bundle has no running-requests gauge"}
    segment = m.provenance.get("segment") if isinstance(m.provenance, dict) else None
    if isinstance(segment, dict):
        section["segment"] = segment
    return section

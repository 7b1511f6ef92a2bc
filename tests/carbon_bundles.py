"""Analytic evidence bundles for the carbon tests: constant power, linear token counters.

One device at ``power_w`` for the whole period, so facility energy per hour is
``power_w / 1000 * pue`` kWh exactly (trapezoid of a constant); output tokens
grow by ``tokens_per_hour`` each hour. Expected carbon figures then follow by
hand from the declared factors.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def carbon_bundle(
    target: Path,
    start: dt.datetime,
    end: dt.datetime,
    *,
    power_w: float = 1000.0,
    pue: float = 1.0,
    tokens_per_hour: float = 1_000_000.0,
    hourly_intensity: np.ndarray | None = None,
    annual: float | None = None,
    grid_extra: dict[str, Any] | None = None,
    carbon: dict[str, Any] | None = None,
    tables: dict[str, dict[str, Any]] | None = None,
    scope: dict[str, Any] | None = None,
) -> Path:
    from greencert.bundle.writer import write_bundle

    t0, t1 = start.timestamp(), end.timestamp()
    t = np.arange(t0, t1 + 30.0, 60.0)
    out = 1_000.0 + tokens_per_hour * (t - t0) / 3600.0
    manifest: dict[str, Any] = {
        "scope": {
            "site": "dc-carbon-1",
            "deployment": "carbon-test",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "hardware": "1x NVIDIA H100 80GB",
            "active_params_billions": 8,
            "gpu_type": "NVIDIA H100 80GB HBM3",
            "gpu_count": 1,
            **(scope or {}),
        },
        "period": {"start": iso(start), "end": iso(end)},
        # Whole nodes metered, every provisioned device in the evidence: energy is metered x PUE under every
        # scheme, so the carbon expectations stay analytic.
        "power": {"file": "power.csv", "kind": "gauge", "unit": "W", "meter_class": "node_meter"},
        "tokens": {"file": "tokens.csv"},
        "facility": {"pue": pue},
        "idle_capacity": {"basis": "metered"},
    }
    files: dict[str, dict[str, Any]] = {
        "power.csv": {"timestamp": t, "device": np.full(t.size, "gpu0"), "value": np.full(t.size, power_w)},
        "tokens.csv": {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out},
    }
    if annual is not None:
        manifest["grid"] = {
            "annual": annual,
            "unit": "gCO2e/kWh",
            "source": "test annual factor",
            "year": 2023,
        }
    else:
        hours = np.arange(np.floor(t0 / 3600) * 3600, t1, 3600.0)
        values = np.full(hours.size, 400.0) if hourly_intensity is None else np.asarray(hourly_intensity)
        assert values.size == hours.size, (values.size, hours.size)
        manifest["grid"] = {"file": "grid.csv", "unit": "gCO2e/kWh", "source": "test hourly grid"}
        files["grid.csv"] = {"timestamp": hours, "intensity": values}
    if grid_extra:
        manifest["grid"].update(grid_extra)
    if carbon is not None:
        manifest["carbon"] = carbon
    files.update(tables or {})
    return write_bundle(target, manifest, files)


def hourly_profile(start: dt.datetime, hours: int, energy_kwh: np.ndarray) -> dict[str, Any]:
    """A delivery-profile table: one row per UTC hour from ``start``."""
    t = start.timestamp() + 3600.0 * np.arange(hours)
    return {"timestamp": t, "energy": np.asarray(energy_kwh, dtype=float)}

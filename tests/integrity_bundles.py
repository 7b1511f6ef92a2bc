"""Analytic bundles for the measurement-integrity tests (uncertainty, reconciliation, load regime).

Every series is a piecewise-constant function of time sampled on a regular grid, so its
trapezoid integral, its gaps and its idle time follow by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
START = T0.timestamp()


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(
    target: Path,
    *,
    hours: int = 1,
    step: float = 15.0,
    power: Callable[[np.ndarray], np.ndarray] | float = 500.0,
    power_spec: dict[str, Any] | None = None,
    devices: int = 1,
    tokens: Callable[[np.ndarray], np.ndarray] | None = None,
    facility: dict[str, Any] | None = None,
    grid: dict[str, Any] | None = None,
    meters: list[tuple[dict[str, Any], dict[str, Any]]] = (),
    extra_tables: dict[str, dict[str, Any]] | None = None,
    drop: Callable[[np.ndarray], np.ndarray] | None = None,
    manifest_extra: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
) -> Path:
    """One bundle: ``power(t_rel)`` W per device, ``tokens(t_rel)`` cumulative output tokens.

    ``drop(t_rel)`` marks power samples to leave out (gaps); ``meters`` are (spec, columns) pairs.
    """
    from greencert.bundle.writer import write_bundle

    t_rel = np.arange(0.0, hours * 3600.0 + step / 2, step)
    t = START + t_rel
    p = np.full(t.size, float(power)) if not callable(power) else np.asarray(power(t_rel), dtype=np.float64)
    keep = np.ones(t.size, bool) if drop is None else ~np.asarray(drop(t_rel), bool)
    out = (
        1_000_000.0 * hours * t_rel / (hours * 3600.0) if tokens is None else np.asarray(tokens(t_rel), float)
    ) + 1000.0
    names = [f"gpu{i}" for i in range(devices)]
    manifest: dict[str, Any] = {
        "scope": {
            "site": "dc-test-1",
            "deployment": "integrity-8b",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "hardware": f"{devices}x NVIDIA H100 80GB",
            "active_params_billions": 8,
            **(scope or {}),
        },
        "period": {"start": iso(T0), "end": iso(T0 + dt.timedelta(hours=hours))},
        "power": {"file": "power.csv", "kind": "gauge", "unit": "W", **(power_spec or {})},
        "tokens": {"file": "tokens.csv"},
        "facility": facility or {"pue": 1.2, "pue_category": 3},
        "grid": grid or {"annual": 400, "unit": "gCO2e/kWh"},
        **(manifest_extra or {}),
    }
    tables: dict[str, dict[str, Any]] = {
        "power.csv": {
            "timestamp": np.tile(t[keep], devices),
            "device": np.repeat(np.array(names), int(keep.sum())),
            "value": np.tile(p[keep], devices),
        },
        "tokens.csv": {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out},
    }
    if meters:
        manifest["meters"] = [spec for spec, _ in meters]
        for spec, columns in meters:
            tables[spec["file"]] = columns
    tables.update(extra_tables or {})
    return write_bundle(target, manifest, tables)


def times(hours: int = 1, step: float = 15.0) -> np.ndarray:
    return START + np.arange(0.0, hours * 3600.0 + step / 2, step)


def assess_bundle(path: Path, scheme_path: Path | None = None, with_budget: bool = True):
    """Figures and integrity assessment of a bundle without the GX validation stage (fast)."""
    from greencert.bundle import open_bundle
    from greencert.compute.integrity import assess
    from greencert.compute.metrics import compute_figures
    from greencert.grading import DEFAULT_SCHEME, load_scheme

    scheme = load_scheme(scheme_path or DEFAULT_SCHEME)
    bundle = open_bundle(path)
    fig = compute_figures(bundle, scheme)
    figures = {"metrics": fig.metrics()}
    return fig, assess(bundle, scheme, fig, figures, with_budget=with_budget)


def budget_row(assessment, source: str) -> dict[str, Any]:
    return next(r for r in assessment.sections["uncertainty"]["budget"] if r["source"] == source)


def findings(assessment, code: str) -> list[dict[str, Any]]:
    return [f for f in assessment.sections["findings"] if f.get("finding") == code]

"""Shared fixtures: bundle builders for analytic cases and an isolated Airflow environment."""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Property tests run on a shared, often loaded 2-core machine: hypothesis's per-example time deadline
# (200 ms) measures the machine's load, not the code, so it is off; the examples themselves still run.
settings.register_profile("greencert", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("greencert")

REPO = Path(__file__).resolve().parents[1]
# Test files sit in tests/{unit,integration}/<subpackage>/ (docs/layout.md) and import the helper
# modules of tests/ (trust_helpers, carbon_bundles, corpus...) and of tests/integration/
# (prometheus_server, carbon_api_server) as plain modules; pytest's "prepend" import mode puts only
# each test file's own folder (and this file's) on sys.path, not its parents, so both go here.
for _helpers in (REPO / "tests", REPO / "tests" / "integration"):
    if str(_helpers) not in sys.path:
        sys.path.insert(0, str(_helpers))
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Certificates are signed with the per-installation development key unless a key is
# configured: keep the test session's key out of the user's home. PDF labels cost a
# headless Chromium run each, so only the tests that check them ask for them.
os.environ.setdefault("GREENCERT_HOME", tempfile.mkdtemp(prefix="greencert-test-home-"))
os.environ.setdefault("GREENCERT_LABEL_PDF", "0")

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_manifest(
    start: dt.datetime = T0,
    end: dt.datetime | None = None,
    *,
    power: dict[str, Any] | None = None,
    grid: dict[str, Any] | None = None,
    facility: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    ext: str = "csv",
) -> dict[str, Any]:
    end = end or start + dt.timedelta(hours=1)
    return {
        "scope": {
            "site": "dc-test-1",
            "deployment": "golden-8b",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "hardware": "1x NVIDIA H100 80GB",
            "active_params_billions": 8,
            **(scope or {}),
        },
        "period": {"start": iso(start), "end": iso(end)},
        "power": power or {"file": f"power.{ext}", "kind": "gauge", "unit": "W"},
        "tokens": {"file": f"tokens.{ext}"},
        "facility": facility or {"pue": 1.2},
        "grid": grid or {"annual": 400, "unit": "gCO2e/kWh"},
    }


def write_golden_bundle(
    target: Path,
    *,
    power_unit: str = "W",
    kind: str = "gauge",
    ext: str = "csv",
    token_reset: bool = False,
    step: float = 15.0,
) -> Path:
    """Analytic case: one device at 500 W for exactly 1 h, 1,000,000 output tokens, PUE 1.2, 400 g/kWh."""
    from greencert.bundle.writer import write_bundle

    start = T0.timestamp()
    t = np.arange(start, start + 3600 + step / 2, step)
    if kind == "gauge":
        factor = {"W": 1.0, "kW": 1e-3}[power_unit]
        value = np.full(t.size, 500.0 * factor)
    else:
        # Energy counter since boot: 500 W = 500 J/s, starting from an arbitrary reading.
        factor = {"mJ": 1e3, "J": 1.0, "kWh": 1 / 3.6e6}[power_unit]
        value = (1.234e9 + 500.0 * (t - start)) * factor
    out = 5_000.0 + 1_000_000.0 * (t - start) / 3600.0
    inp = 9_000.0 + 3_000_000.0 * (t - start) / 3600.0
    if token_reset:
        # Engine restart just after the scrape at 29:45: from 30:00 on the counters read only
        # the tokens served since the restart, so nothing is lost and nothing doubled.
        restart = start + 1800 - step
        after = t > restart
        out = np.where(after, 1_000_000.0 * (t - restart) / 3600.0, out)
        inp = np.where(after, 3_000_000.0 * (t - restart) / 3600.0, inp)
    # Whole nodes metered and every provisioned device in the evidence: the golden figures are the metered
    # energy x PUE under every scheme (2026.3 would otherwise add node parts and idle capacity).
    manifest = make_manifest(
        power={"file": f"power.{ext}", "kind": kind, "unit": power_unit, "meter_class": "node_meter"}, ext=ext
    )
    manifest["idle_capacity"] = {"basis": "metered"}
    tables = {
        f"power.{ext}": {"timestamp": t, "device": np.full(t.size, "gpu0"), "value": value},
        f"tokens.{ext}": {"timestamp": t, "output_tokens": out, "input_tokens": inp},
    }
    return write_bundle(target, manifest, tables)


@pytest.fixture
def golden_bundle(tmp_path: Path) -> Path:
    return write_golden_bundle(tmp_path / "bundle")

"""Energy counter vs integrated power cross-check (findings, tolerance, resets, devices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import T0, make_manifest
from greencert.bundle.reader import open_bundle
from greencert.bundle.writer import write_bundle
from greencert.compute.crosscheck import DEFAULT_TOLERANCE, crosscheck_meters
from greencert.grading import SCHEME_DIR, load_scheme

SCHEME = load_scheme(SCHEME_DIR / "greencert-2026.1.yaml")
WATTS = {"gpu0": 500.0, "gpu1": 300.0}


def bundle_with_counter(
    target: Path, counter_scale: dict[str, float], *, crosscheck: bool = True, tolerance: float | None = None
) -> Path:
    """1 h at 15 s: constant power per GPU, and an mJ counter reading ``scale`` x the true energy.

    gpu1's counter restarts (driver reload) right after the 30:00 sample.
    """
    start = T0.timestamp()
    t = np.arange(start, start + 3600 + 1, 15.0)
    power_t, power_d, power_v, cnt_v = [], [], [], []
    for device, watts in WATTS.items():
        joules = watts * (t - start) * counter_scale.get(device, 1.0)
        counter = 9.9e11 + 1e3 * joules
        if device == "gpu1":
            restart = start + 1800
            counter = np.where(
                t > restart, 1e3 * watts * (t - restart) * counter_scale.get(device, 1.0), counter
            )
        power_t.append(t)
        power_d.append(np.full(t.size, device))
        power_v.append(np.full(t.size, watts))
        cnt_v.append(counter)
    meter = {
        "name": "gpu_energy_counter",
        "layer": "gpu",
        "file": "counter.csv",
        "kind": "counter",
        "unit": "mJ",
    }
    if crosscheck:
        meter["crosscheck"] = True
    if tolerance is not None:
        meter["crosscheck_tolerance"] = tolerance
    manifest = make_manifest(
        power={"file": "power.csv", "kind": "gauge", "unit": "W", "meter_class": "gpu_sensor"}
    )
    manifest["meters"] = [meter]
    columns = {"timestamp": np.concatenate(power_t), "device": np.concatenate(power_d)}
    tables = {
        "power.csv": {**columns, "value": np.concatenate(power_v)},
        "counter.csv": {**columns, "value": np.concatenate(cnt_v)},
        "tokens.csv": {
            "timestamp": t,
            "output_tokens": 1e6 * (t - start) / 3600,
            "input_tokens": 3e6 * (t - start) / 3600,
        },
    }
    return write_bundle(target, manifest, tables)


def test_agreeing_counter_with_a_reset_passes(tmp_path):
    checks = crosscheck_meters(open_bundle(bundle_with_counter(tmp_path / "b", {})), SCHEME)
    (summary,) = checks.summaries
    assert summary["passed"] and summary["devices_compared"] == 2
    assert summary["max_abs_relative_difference"] == pytest.approx(0.0, abs=1e-12)
    assert summary["tolerance"] == DEFAULT_TOLERANCE == 0.05
    assert checks.findings == []


def test_eight_percent_disagreement_is_a_finding_with_figures(tmp_path):
    checks = crosscheck_meters(open_bundle(bundle_with_counter(tmp_path / "b", {"gpu1": 1.08})), SCHEME)
    (finding,) = checks.findings
    assert finding["finding"] == "energy_crosscheck_mismatch" and finding["severity"] == "warning"
    assert finding["devices_outside_tolerance"] == 1 and finding["devices_compared"] == 2
    (device,) = finding["devices"]
    assert device["device"] == "gpu1"
    assert device["integrated_power_kwh"] == pytest.approx(300.0 * 3600 / 3.6e6, rel=1e-9)
    assert device["meter_energy_kwh"] == pytest.approx(1.08 * 300.0 * 3600 / 3.6e6, rel=1e-9)
    assert device["relative_difference"] == pytest.approx(0.08, rel=1e-9)
    assert "gpu1 +8.0%" in finding["message"]
    assert checks.summaries[0]["passed"] is False


def test_tolerance_from_the_manifest_and_opt_in(tmp_path):
    loose = crosscheck_meters(
        open_bundle(bundle_with_counter(tmp_path / "a", {"gpu1": 1.08}, tolerance=0.1)), SCHEME
    )
    assert loose.findings == [] and loose.summaries[0]["tolerance"] == 0.1
    off = crosscheck_meters(
        open_bundle(bundle_with_counter(tmp_path / "b", {"gpu1": 1.5}, crosscheck=False)), SCHEME
    )
    assert off.findings == [] and off.summaries == []


def test_finding_reaches_the_certificate(tmp_path):
    import json

    from greencert.pipeline import certify

    bundle = bundle_with_counter(tmp_path / "b", {"gpu0": 0.9})
    cert = json.loads(
        Path(certify(bundle, tmp_path / "out", SCHEME.path, work_dir=tmp_path / "w")).read_text()
    )
    (finding,) = [f for f in cert["findings"] if f["finding"] == "energy_crosscheck_mismatch"]
    assert finding["devices"][0]["device"] == "gpu0"
    assert finding["devices"][0]["relative_difference"] == pytest.approx(-0.1, rel=1e-9)

"""Reconciliation between meter layers, unmetered node parts, and the 8 % counter-vs-power case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from integrity_bundles import START, assess_bundle, budget_row, build, findings, times

J_PER_KWH = 3.6e6


def counter_mj(watts: float, hours: int = 1, step: float = 15.0) -> np.ndarray:
    """A DCGM-style energy counter (mJ since boot) of a device drawing ``watts``."""
    t = times(hours, step)
    return 7.0e12 + watts * (t - START) * 1e3


def gpu_counter(watts: float, *, crosscheck: bool = True) -> tuple[dict, dict]:
    spec = {
        "name": "gpu-energy",
        "layer": "gpu",
        "file": "gpu_energy.csv",
        "kind": "counter",
        "unit": "mJ",
        "meter_class": "gpu_sensor",
        **({"crosscheck": True} if crosscheck else {}),
    }
    t = times()
    return spec, {"timestamp": t, "device": np.full(t.size, "gpu0"), "value": counter_mj(watts)}


def node_meter(watts, hours: int = 1, accuracy: float | None = None) -> tuple[dict, dict]:
    spec = {"name": "node", "layer": "node", "file": "node.csv", "kind": "gauge", "unit": "W"}
    spec["meter_class"] = "node_meter"
    if accuracy is not None:
        spec["accuracy"] = accuracy
    t = times(hours)
    value = watts(t - START) if callable(watts) else np.full(t.size, float(watts))
    return spec, {"timestamp": t, "device": np.full(t.size, "node0"), "value": value}


GPU = {"meter_class": "gpu_sensor"}


def test_counter_and_power_8_percent_apart_give_a_finding_and_a_wider_interval(tmp_path: Path) -> None:
    """Done-when case of the issue: GPU energy counter 540 W-equivalent, integrated power 500 W."""
    from greencert.pipeline import certify

    agree = build(tmp_path / "agree", power_spec=GPU, meters=[gpu_counter(500.0)])
    apart = build(tmp_path / "apart", power_spec=GPU, meters=[gpu_counter(540.0)])
    path = certify(apart, tmp_path / "out", pdf=False)
    cert = json.loads(Path(path).read_text())

    (disagree,) = [f for f in cert["findings"] if f.get("finding") == "same-layer-disagree"]
    assert disagree["severity"] == "warning"
    assert disagree["figures"]["relative_difference"] == pytest.approx(0.08, abs=1e-6)  # 540/500 - 1
    assert "8.0%" in disagree["message"]
    # The per-device cross-check (compute.crosscheck) reports the same device too.
    assert any(f.get("finding") == "energy_crosscheck_mismatch" for f in cert["findings"])
    check = next(c for c in cert["reconciliation"]["checks"] if c["check"] == "same_layer")
    assert check["passed"] is False
    assert check["energy_kwh"] == pytest.approx([0.5, 0.54])

    wide = cert["metrics"]["energy_per_million_tokens"]["interval95"]
    _, twin = assess_bundle(agree)
    narrow = twin.intervals["energy_per_million_tokens"]
    assert not findings(twin, "same-layer-disagree")
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert wide[1] > narrow[1]
    # With only this source uncertain, the truth lies anywhere between the two readings:
    # the central 95 % of a factor uniform on [1, 1.08] is [1.002, 1.078].
    row = next(r for r in cert["uncertainty"]["budget"] if r["source"] == "cross_check")
    assert row["energy_relative95"] == pytest.approx([0.025 * 0.08, 0.975 * 0.08], abs=0.002)
    # The label gets the interval from the certificate.
    # Scheme 2026.3 (the default): GPU energy x 1.45 node parts x (1 + 10/83) estimated idle provisioned
    # capacity x PUE 1.2, per 1 Mtok.
    assert cert["metrics"]["energy_per_million_tokens"]["value"] == pytest.approx(
        0.5 * 1.45 * (1 + 10 / 83) * 1.2
    )


def test_a_same_layer_meter_that_agrees_is_reported(tmp_path: Path) -> None:
    _, a = assess_bundle(build(tmp_path / "b", power_spec=GPU, meters=[gpu_counter(505.0, crosscheck=False)]))
    (ok,) = findings(a, "same-layer-agree")
    assert ok["figures"]["relative_difference"] == pytest.approx(0.01, abs=1e-6)
    assert a.sections["uncertainty"]["budget"][0]["source"] == "meter"
    assert all(r["source"] != "cross_check" for r in a.sections["uncertainty"]["budget"])


def test_node_meter_supplies_the_unmetered_node_parts(tmp_path: Path) -> None:
    fig, a = assess_bundle(build(tmp_path / "b", power_spec=GPU, meters=[node_meter(700.0)]))
    # IT energy = node energy: 700 W x 1 h.
    assert fig.it_energy.to("kWh").magnitude == pytest.approx(0.7)
    assert a.methodology["it_energy_basis"] == "node_meter"
    node = a.sections["reconciliation"]["unmetered_node_parts"]
    assert node["basis"] == "node_meter"
    assert node["added_kwh"] == pytest.approx(0.2)
    (f,) = findings(a, "node-parts-metered")
    assert f["figures"]["added_kwh"] == pytest.approx(0.2)
    (order,) = findings(a, "layer-order-ok")
    assert order["figures"]["outer_to_inner_ratio"] == pytest.approx(1.4)
    # The node meter's +-5 % (default for its class), not the ratio, is in the budget.
    row = budget_row(a, "node_parts")
    assert row["energy_relative95"] == pytest.approx([1 / 1.0475 - 1, 1 / 0.9525 - 1], abs=0.003)


def test_without_a_node_meter_the_ratio_is_used_and_said(tmp_path: Path) -> None:
    fig, a = assess_bundle(build(tmp_path / "b", power_spec=GPU))
    assert fig.it_energy.to("kWh").magnitude == pytest.approx(0.5 * 1.45)
    node = a.sections["reconciliation"]["unmetered_node_parts"]
    assert node["basis"] == "estimated_ratio"
    assert node["ratio"] == 1.45 and node["ratio_range"] == [1.1, 1.8]
    assert findings(a, "node-parts-estimated")


def test_a_whole_node_meter_adds_nothing(tmp_path: Path) -> None:
    fig, a = assess_bundle(build(tmp_path / "b", power_spec={"meter_class": "node_meter"}))
    assert fig.it_energy.to("kWh").magnitude == pytest.approx(0.5)
    assert a.sections["reconciliation"]["unmetered_node_parts"]["basis"] == "whole_node_metered"


def test_gpu_above_node_in_an_hour_is_a_finding_naming_the_hour(tmp_path: Path) -> None:
    # GPU 500 W (+-1 % declared); node 600 W in the first hour, 450 W in the second (+-1 %):
    # 500 > 450 x 1.02 in hour 2 only.
    _, a = assess_bundle(
        build(
            tmp_path / "b",
            hours=2,
            power_spec={**GPU, "accuracy": 0.01},
            meters=[node_meter(lambda t: np.where(t <= 3600, 600.0, 450.0), hours=2, accuracy=0.01)],
        )
    )
    (bad,) = findings(a, "layer-order-violated")
    assert bad["figures"]["hours_violated"] == 1
    assert bad["figures"]["worst_hour"] == "2026-01-01T01:00:00Z"
    check = next(c for c in a.sections["reconciliation"]["checks"] if c["check"] == "layer_order")
    assert check["inner"] == "gpu" and check["outer"] == "node" and check["passed"] is False


def _site_meters(pue: float) -> dict:
    t = times(1, 60.0)
    it = 1.0e5 + 1000.0 * (t - START) / 3600.0  # 1000 kW site IT load, kWh counter
    fac = 5.0e5 + 1000.0 * pue * (t - START) / 3600.0
    spec = {"kind": "counter", "unit": "kWh", "meter_class": "revenue_meter"}
    return {
        "facility": {
            "pue": 1.2,
            "meter": {"file": "fac.csv", **spec},
            "it_meter": {"file": "it.csv", **spec},
        },
        "extra_tables": {"fac.csv": {"timestamp": t, "value": fac}, "it.csv": {"timestamp": t, "value": it}},
    }


@pytest.mark.parametrize(("measured", "agrees"), [(1.21, True), (1.5, False)])
def test_measured_facility_over_it_against_the_declared_pue(
    tmp_path: Path, measured: float, agrees: bool
) -> None:
    site = _site_meters(measured)
    fig, a = assess_bundle(
        build(
            tmp_path / "b",
            power_spec={"meter_class": "pdu"},
            facility=site["facility"],
            extra_tables=site["extra_tables"],
        )
    )
    assert fig.pue == pytest.approx(measured)
    code = "pue-agrees" if agrees else "pue-disagrees"
    (f,) = findings(a, code)
    assert f["figures"]["measured_pue"] == pytest.approx(measured)
    assert f["figures"]["declared_pue"] == 1.2
    check = next(c for c in a.sections["reconciliation"]["checks"] if c["check"] == "pue")
    # tolerance = scheme 5 % + both revenue meters' 0.5 %
    assert check["tolerance"] == pytest.approx(0.06)
    assert check["passed"] is agrees


def test_undeclared_meter_class_is_a_warning(tmp_path: Path) -> None:
    _, a = assess_bundle(build(tmp_path / "b"))
    (f,) = findings(a, "meter-class-undeclared")
    assert f["severity"] == "warning"

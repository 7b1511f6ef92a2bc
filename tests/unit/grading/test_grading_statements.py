"""Scheme 2026.3: the letter is the efficiency grade; the confirmed grade and the measurement class are
stated beside it; an undeclared meter class is read conservatively (issue 16, point 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from greencert.grading import SCHEME_DIR, grade, load_scheme, measurement_class
from integrity_bundles import assess_bundle, build, findings

S_2026_2 = SCHEME_DIR / "greencert-2026.2.yaml"
S_2026_3 = SCHEME_DIR / "greencert-2026.3.yaml"


def _band_by_hand(value: float, edges: list[float]) -> str:
    # Independent of greencert.grading.band: count the edges the value exceeds.
    return "ABCDEFG"[sum(1 for e in edges if value > e)]


def test_undeclared_meter_class_adds_node_parts_under_2026_3(tmp_path: Path) -> None:
    # 500 W for one hour, no meter_class: 0.5 kWh metered.
    bundle = build(tmp_path / "b")
    fig2, a2 = assess_bundle(bundle, S_2026_2)
    fig3, a3 = assess_bundle(bundle, S_2026_3)
    # 2026.2 took the series as the whole IT load (the flattering reading)...
    assert fig2.it_energy.to("kWh").magnitude == pytest.approx(0.5)
    # ...2026.3 reads it as GPU-only metering: x 1.45, the centre of the node/GPU bracket.
    assert fig3.it_energy.to("kWh").magnitude == pytest.approx(0.5 * 1.45)
    (f,) = findings(a3, "meter-class-undeclared")
    assert f["severity"] == "warning" and "GPU-only" in f["message"]
    node = a3.sections["reconciliation"]["unmetered_node_parts"]
    assert node["basis"] == "estimated_ratio" and "meter_class_undeclared" in node


def test_declaring_the_class_never_raises_the_figure_above_undeclared(tmp_path: Path) -> None:
    # The same series declared as GPU sensor gives the same figure as undeclared: leaving the class out
    # buys nothing.
    undeclared, _ = assess_bundle(build(tmp_path / "u"), S_2026_3)
    gpu, _ = assess_bundle(build(tmp_path / "g", power_spec={"meter_class": "gpu_sensor"}), S_2026_3)
    node, _ = assess_bundle(build(tmp_path / "n", power_spec={"meter_class": "node_meter"}), S_2026_3)
    u = undeclared.energy_per_million_tokens.magnitude
    assert u == pytest.approx(gpu.energy_per_million_tokens.magnitude)
    assert u > node.energy_per_million_tokens.magnitude


def _figures(power_class, it_basis, pue_basis="declared"):
    return {
        "reconciliation": {
            "layers": [{"meter_class": power_class}],
            "unmetered_node_parts": {"basis": it_basis},
        },
        "methodology": {"it_energy_basis": it_basis, "pue_basis": pue_basis},
    }


@pytest.mark.parametrize(
    ("power_class", "it_basis", "pue_basis", "expected"),
    [
        ("revenue_meter", "whole_node_metered", "measured", "facility"),
        ("pdu", "whole_node_metered", "declared", "pdu"),
        ("node_meter", "whole_node_metered", "declared", "node"),
        ("gpu_sensor", "node_meter", "declared", "node"),
        ("gpu_sensor", "estimated_ratio", "measured", "gpu_only"),
        (None, "estimated_ratio", "measured", "estimated"),
    ],
)
def test_measurement_class_names_what_was_metered(power_class, it_basis, pue_basis, expected) -> None:
    m = measurement_class(_figures(power_class, it_basis, pue_basis))
    assert m["class"] == expected
    assert m["label"] and m["detail"]
    assert ("PUE measured" in m["detail"]) == (pue_basis == "measured")


def test_efficiency_and_confirmed_grades_are_separate_statements() -> None:
    scheme = load_scheme(S_2026_3)
    edges = list(scheme.size_class(8).energy_band_edges)
    carbon_edges = [e * 300 for e in edges]  # carbon_reference_intensity 300 gCO2e/kWh
    # Point in band B, interval reaching into C: efficiency B, confirmed C, held back by measurement.
    value = (edges[0] + edges[1]) / 2
    high = (edges[1] + edges[2]) / 2
    carbon = value * 100  # well inside A for carbon
    g = grade(
        value,
        carbon,
        8,
        scheme,
        [value * 0.9, high],
        [carbon * 0.95, carbon * 1.05],
        measurement={"class": "gpu_only", "label": "GPU sensors only", "detail": "x"},
    )
    assert _band_by_hand(value, edges) == "B" and _band_by_hand(high, edges) == "C"
    assert _band_by_hand(carbon * 1.05, carbon_edges) == "A"
    assert g["overall"] == g["efficiency"]["overall"] == "B"
    assert g["energy"] == "B" and g["carbon"] == "A"
    assert g["confirmed"] == {"overall": "C", "energy": "C", "carbon": "A", "level": 0.95}
    assert g["limited_by"] == "measurement"
    assert g["measurement"]["class"] == "gpu_only"


def test_a_precise_figure_is_limited_by_efficiency_only() -> None:
    scheme = load_scheme(S_2026_3)
    edges = list(scheme.size_class(70).energy_band_edges)
    value = (edges[2] + edges[3]) / 2  # band D
    g = grade(value, 1.0, 70, scheme, [value * 0.98, value * 1.02], [0.98, 1.02])
    assert _band_by_hand(value, edges) == "D"
    assert g["efficiency"]["overall"] == g["confirmed"]["overall"] == "D"
    assert g["limited_by"] == "efficiency"


def test_2026_2_keeps_the_confirmed_grade_as_the_letter() -> None:
    scheme = load_scheme(S_2026_2)
    edges = list(scheme.size_class(8).energy_band_edges)
    value = (edges[0] + edges[1]) / 2
    high = (edges[1] + edges[2]) / 2
    g = grade(value, value, 8, scheme, [value * 0.9, high], [value * 0.9, value * 1.01])
    assert g["overall"] == "C" and "efficiency" not in g and "confirmed" not in g

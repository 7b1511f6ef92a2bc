"""Gap bound ``device_ceiling`` (scheme 2026.3): an unbridged gap may hold up to the device's power
ceiling x its duration; scheme 2026.2 keeps the neighbouring readings' bounds. Expected energies
are worked out by hand from the piecewise-constant analytic bundles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.compute.integrate import hour_edges
from greencert.compute.uncertainty import gap_bounds
from greencert.grading import SCHEME_DIR
from integrity_bundles import START, assess_bundle, budget_row, build, findings

S26_2 = SCHEME_DIR / "greencert-2026.2.yaml"
S26_3 = SCHEME_DIR / "greencert-2026.3.yaml"
J_PER_KWH = 3.6e6


def GAP(t: np.ndarray) -> np.ndarray:  # readings at 20:00 and 30:00, none between: a 600 s gap
    return (t > 1200) & (t < 1800)


def test_gap_bounds_with_a_ceiling_run_from_the_lowest_neighbour_to_the_ceiling(tmp_path: Path) -> None:
    path = build(tmp_path / "b", power=lambda t: np.where(t <= 1200, 400.0, 600.0), drop=GAP)
    b = open_bundle(path)
    edges = hour_edges(START, START + 3600.0)
    g = gap_bounds(b.power.whole, "gauge", 1 / J_PER_KWH, START, START + 3600.0, 120.0, edges, 3, ceiling=1500.0)
    assert g.count == 1
    assert g.low_kwh.sum() == pytest.approx(400 * 600 / J_PER_KWH)
    assert g.high_kwh.sum() == pytest.approx(1500 * 600 / J_PER_KWH)


def test_the_scheme_ceiling_and_a_tighter_manifest_ceiling_bound_the_gap(tmp_path: Path) -> None:
    for ceiling, spec in ((1500.0, {}), (900.0, {"max_device_power": "900 W"})):
        path = build(tmp_path / f"b{ceiling:g}", power=400.0, drop=GAP, power_spec=spec)
        _, a = assess_bundle(path, S26_3)
        row = budget_row(a, "gaps")
        assert f"and {ceiling * 600 / J_PER_KWH:.4g} kWh" in row["distribution"]
        assert "ceiling" in row["basis"]
        (f,) = findings(a, "unbridged-gaps")
        assert f"-{ceiling * 600 / J_PER_KWH:.4g} kWh" in f["message"]
    # Units: the same ceiling read by a kW series.
    path = build(tmp_path / "kw", power=0.4, drop=GAP, power_spec={"unit": "kW"})
    row = budget_row(assess_bundle(path, S26_3)[1], "gaps")
    assert f"and {1500 * 600 / J_PER_KWH:.4g} kWh" in row["distribution"]


def test_scheme_2026_2_keeps_the_neighbouring_readings_bounds(tmp_path: Path) -> None:
    path = build(tmp_path / "b", power=400.0, drop=GAP)
    row = budget_row(assess_bundle(path, S26_2)[1], "gaps")
    assert f"between {400 * 600 / J_PER_KWH:.4g} and {400 * 600 / J_PER_KWH:.4g} kWh" in row["distribution"]


def test_a_gap_hiding_a_peak_is_inside_the_2026_3_interval_only(tmp_path: Path) -> None:
    # 300 W throughout, except a 1,400 W peak inside the gap that no reading sees (the case).
    # A PDU-class meter (+-1 %) so that the gap dominates the interval.
    path = build(
        tmp_path / "b",
        power=300.0,
        drop=GAP,
        power_spec={"meter_class": "pdu", "accuracy": 0.01},
        facility={"pue": 1.2, "pue_category": 3},
        manifest_extra={"idle_capacity": {"basis": "metered"}},  # no idle share in the truth
    )
    true_it_j = 300 * 3600 + (1400 - 300) * 500  # the peak lasts 500 of the gap's 600 s
    truth = true_it_j / J_PER_KWH * 1.2  # kWh per Mtok (1 Mtok in the hour)
    _, old = assess_bundle(path, S26_2)
    _, new = assess_bundle(path, S26_3)
    assert old.intervals["energy_per_million_tokens"][1] < truth  # 2026.2: the peak is outside
    low, high = new.intervals["energy_per_million_tokens"]
    assert low <= truth <= high

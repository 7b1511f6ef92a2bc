"""95 % intervals: gaps, sampling noise and systematic factors against hand or reference calculations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.compute.integrate import hour_edges
from greencert.compute.uncertainty import _round_out, gap_bounds, sampling_variance
from greencert.grading import SCHEME_DIR
from integrity_bundles import START, assess_bundle, budget_row, build, findings

S_2026_2 = SCHEME_DIR / "greencert-2026.2.yaml"  # tests of the 2026.2 uncertainty model, which still verifies

J_PER_KWH = 3.6e6


def _gaps(bundle_path: Path, hours: int = 1):
    b = open_bundle(bundle_path)
    edges = hour_edges(START, START + hours * 3600.0)
    return gap_bounds(b.power.whole, "gauge", 1 / J_PER_KWH, START, START + hours * 3600.0, 120.0, edges, 3)


def test_gap_energy_lies_between_the_neighbouring_readings(tmp_path: Path) -> None:
    # 400 W until 20:00, 600 W from 30:00; the readings in between are missing (a 600 s gap).
    bundle = build(
        tmp_path / "b",
        power=lambda t: np.where(t <= 1200, 400.0, 600.0),
        drop=lambda t: (t > 1200) & (t < 1800),
        power_spec={"meter_class": "pdu", "accuracy": 0.01},
    )
    g = _gaps(bundle)
    assert g.count == 1
    assert g.device_seconds == pytest.approx(600.0)
    assert g.low_kwh.sum() == pytest.approx(400 * 600 / J_PER_KWH)
    assert g.high_kwh.sum() == pytest.approx(600 * 600 / J_PER_KWH)

    fig, a = assess_bundle(bundle)
    # The certified figure leaves the gap out (foundation rule): 400 W x 1200 s + 600 W x 1800 s.
    assert fig.it_energy.to("kWh").magnitude == pytest.approx((400 * 1200 + 600 * 1800) / J_PER_KWH)
    (gap_finding,) = findings(a, "unbridged-gaps")
    assert gap_finding["figures"]["gaps"] == 1
    # ... the interval holds the gap's energy: the truth is at least 0.5 kWh x PUE 1.2 per Mtok.
    low, high = a.intervals["energy_per_million_tokens"]
    value = fig.metrics()["energy_per_million_tokens"]["value"]  # as on the certificate
    assert low <= value < (400 * 1200 + 600 * 1800 + 400 * 600) / J_PER_KWH * 1.2 < high


def test_a_gap_across_an_hour_is_split_by_time(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", hours=2, drop=lambda t: (t > 3300) & (t < 3900))
    g = _gaps(bundle, hours=2)
    np.testing.assert_allclose(g.low_kwh, [500 * 300 / J_PER_KWH, 500 * 300 / J_PER_KWH])
    np.testing.assert_allclose(g.high_kwh, g.low_kwh)


def test_time_before_the_first_reading_is_a_gap(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", drop=lambda t: t < 600)
    g = _gaps(bundle)
    assert g.count == 1
    assert g.low_kwh.sum() == pytest.approx(500 * 600 / J_PER_KWH)


def test_sampling_variance_of_white_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    sigma, step = 20.0, 15.0
    bundle = build(tmp_path / "b", power=lambda t: 500.0 + rng.normal(0.0, sigma, t.size), step=step)
    b = open_bundle(bundle)
    edges = hour_edges(START, START + 3600.0)
    var = sampling_variance(b.power.whole, "gauge", 1 / J_PER_KWH, START, START + 3600.0, 120.0, edges)
    # Trapezoid weights: step for the 239 inner readings, step/2 for the two at the ends.
    expected = sigma**2 * (239 * step**2 + 2 * (step / 2) ** 2) / J_PER_KWH**2
    assert var.sum() == pytest.approx(expected, rel=0.25)


def test_a_constant_series_and_a_counter_have_no_sampling_variance(tmp_path: Path) -> None:
    b = open_bundle(build(tmp_path / "b"))
    edges = hour_edges(START, START + 3600.0)
    assert sampling_variance(b.power.whole, "gauge", 1.0, START, START + 3600.0, 120.0, edges).sum() == 0.0
    assert sampling_variance(b.power.whole, "counter", 1.0, START, START + 3600.0, 120.0, edges).sum() == 0.0


def _reference_quantiles(halfwidths: list[tuple[str, float]], n: int) -> tuple[float, float]:
    """2.5 % and 97.5 % quantiles of prod(factor), by midpoint integration over a grid (no sampling).

    ("reading", a): the truth is reading / (1 + e), e uniform in [-a, a];
    ("scale", a):   the truth is value x (1 + q), q uniform in [-a, a].
    """
    grids = []
    for kind, a in halfwidths:
        x = -a + (np.arange(n) + 0.5) * 2 * a / n
        grids.append(1.0 / (1.0 + x) if kind == "reading" else 1.0 + x)
    product = grids[0]
    for g in grids[1:]:
        product = np.multiply.outer(product, g).ravel()
    product = np.sort(product)
    cdf = (np.arange(product.size) + 0.5) / product.size
    return float(np.interp(0.025, cdf, product)), float(np.interp(0.975, cdf, product))


def test_interval_of_systematic_factors_matches_a_reference_integration(tmp_path: Path) -> None:
    # 500 W for 1 h on a +-1 % PDU, PUE 1.2 of category 3 (+-3 %), annual grid factor (+-20 %).
    bundle = build(tmp_path / "b", power_spec={"meter_class": "pdu", "accuracy": 0.01})
    # Scheme 2026.2's model (uniform +-a per class); 2026.3 reads classes as bounds and adds the idle
    # capacity term (tests/unit/compute/test_idle_capacity_term.py, test_interval_calibration.py).
    _, a = assess_bundle(bundle, S_2026_2)
    e_lo, e_hi = _reference_quantiles([("reading", 0.01), ("scale", 0.03)], 2000)
    c_lo, c_hi = _reference_quantiles([("reading", 0.01), ("scale", 0.03), ("scale", 0.20)], 200)
    energy, carbon = a.intervals["energy_per_million_tokens"], a.intervals["carbon_per_million_tokens"]
    # Point values by hand: 0.5 kWh x 1.2 / 1 Mtok and x 400 g/kWh. Monte Carlo error and
    # rounding to 4 significant digits stay within 0.2 % of the value.
    assert energy[0] == pytest.approx(0.6 * e_lo, abs=0.002 * 0.6)
    assert energy[1] == pytest.approx(0.6 * e_hi, abs=0.002 * 0.6)
    assert carbon[0] == pytest.approx(240 * c_lo, abs=0.003 * 240)
    assert carbon[1] == pytest.approx(240 * c_hi, abs=0.003 * 240)


def test_budget_rows_are_the_quantiles_of_each_distribution(tmp_path: Path) -> None:
    # GPU sensor (default +-10 %), no node meter (node/GPU ratio 1.10-1.80, centre 1.45).
    _, a = assess_bundle(build(tmp_path / "b", power_spec={"meter_class": "gpu_sensor"}), S_2026_2)
    tol = 0.003
    meter = budget_row(a, "meter")["energy_relative95"]
    assert meter == pytest.approx([1 / (1 + 0.095) - 1, 1 / (1 - 0.095) - 1], abs=tol)
    node = budget_row(a, "node_parts")["energy_relative95"]
    assert node == pytest.approx([(1.10 + 0.025 * 0.7) / 1.45 - 1, (1.80 - 0.025 * 0.7) / 1.45 - 1], abs=tol)
    pue = budget_row(a, "pue")["energy_relative95"]
    assert pue == pytest.approx([-0.95 * 0.03, 0.95 * 0.03], abs=tol)
    grid = budget_row(a, "grid")
    assert grid["energy_relative95"] == [0.0, 0.0]
    assert grid["carbon_relative95"] == pytest.approx([-0.95 * 0.20, 0.95 * 0.20], abs=tol)


def test_interval_ends_are_rounded_outwards() -> None:
    assert _round_out(0.123456, 4, up=False) == 0.1234
    assert _round_out(0.123456, 4, up=True) == 0.1235
    assert _round_out(0.1234, 4, up=True) == 0.1234
    assert _round_out(1234.56, 4, up=True) == 1235.0
    assert _round_out(-0.5, 4, up=False) == -0.5


def test_same_bundle_same_interval(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", power=lambda t: 400 + 100 * np.sin(t / 600.0))
    first = assess_bundle(bundle)[1].intervals
    second = assess_bundle(bundle)[1].intervals
    assert first == second


def test_scheme_2026_1_adds_neither_intervals_nor_node_parts(tmp_path: Path) -> None:
    from greencert.grading import load_scheme
    from greencert.pipeline import figures_document

    bundle = build(tmp_path / "b", power_spec={"meter_class": "gpu_sensor"})
    b = open_bundle(bundle)
    report = {"suites": [], "rows": {}}
    old = figures_document(b, load_scheme(SCHEME_DIR / "greencert-2026.1.yaml"), report)
    assert "interval95" not in old["metrics"]["energy_per_million_tokens"]
    assert "uncertainty" not in old
    assert old["metrics"]["it_energy"]["value"] == pytest.approx(0.5)
    new = figures_document(b, load_scheme(SCHEME_DIR / "greencert-2026.2.yaml"), report)
    assert new["metrics"]["it_energy"]["value"] == pytest.approx(0.5 * 1.45)
    assert len(new["metrics"]["energy_per_million_tokens"]["interval95"]) == 2

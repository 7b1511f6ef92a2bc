"""Idle provisioned capacity as an interval source (scheme 2026.3): an estimated share is uniform in
[low, high]; facility energy = (IT + IT x share) x PUE, so energy per Mtok scales by (1 + share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencert.compute.uncertainty import GapBounds, Model, simulate
from greencert.grading import SCHEME_DIR
from integrity_bundles import assess_bundle, budget_row, build


def _model(idle: tuple[float, float, float] | None, uncertain: bool) -> Model:
    h = 2
    return Model(
        tokens_mtok=2.0,
        primary_kwh=np.array([1.0, 1.0]),
        gaps=GapBounds(np.zeros(h), np.zeros(h), 0, 0.0),
        noise_var_kwh2=np.zeros(h),
        primary_accuracy=0.0,
        intensity=np.array([300.0, 300.0]),
        grid_kind=np.array([2, 2]),
        grid_halfwidth=(0.0, 0.0, 0.0),
        pue_value=1.25,
        idle_share=idle,
        idle_uncertain=uncertain,
    )


def test_estimated_share_is_drawn_uniformly_and_scales_energy_and_carbon() -> None:
    s0, lo, hi = 0.12, 0.0, 0.24
    m = _model((s0, lo, hi), True)
    # Point value: 2 kWh x (1 + 0.12) x 1.25 / 2 Mtok.
    assert m.point_facility_kwh().sum() / 2.0 == pytest.approx(2 * 1.12 * 1.25 / 2)
    d = simulate(m, 40_000, 1, 2_000_000, frozenset({"idle_capacity"}))
    q = np.quantile(d.energy_per_mtok, [0.025, 0.5, 0.975])
    ref = [1.25 * (1 + lo + p * (hi - lo)) for p in (0.025, 0.5, 0.975)]  # 2 kWh / 2 Mtok x PUE
    np.testing.assert_allclose(q, ref, rtol=2e-3)
    np.testing.assert_allclose(d.carbon_per_mtok, d.energy_per_mtok * 300.0, rtol=1e-12)


def test_measured_or_declared_share_is_not_a_source() -> None:
    for m in (_model((0.1, 0.0, 0.2), False), _model((0.1, 0.1, 0.1), True)):
        d = simulate(m, 1000, 1, 2_000_000, frozenset({"idle_capacity"}))
        np.testing.assert_allclose(d.energy_per_mtok, 1.25 * 1.1)


def test_a_2026_3_bundle_without_idle_declaration_has_an_idle_row(tmp_path: Path) -> None:
    fig, a = assess_bundle(build(tmp_path / "b"), SCHEME_DIR / "greencert-2026.3.yaml")
    idle = fig.idle_capacity
    assert idle is not None and idle.basis != "measured" and idle.high > idle.low
    row = budget_row(a, "idle_capacity")
    lo_ref = (1 + idle.low + 0.025 * (idle.high - idle.low)) / (1 + idle.share) - 1
    hi_ref = (1 + idle.low + 0.975 * (idle.high - idle.low)) / (1 + idle.share) - 1
    assert row["energy_relative95"] == pytest.approx([lo_ref, hi_ref], abs=2e-3)


def test_metered_idle_capacity_adds_no_row(tmp_path: Path) -> None:
    path = build(tmp_path / "b", manifest_extra={"idle_capacity": {"basis": "metered"}})
    _, a = assess_bundle(path, SCHEME_DIR / "greencert-2026.3.yaml")
    assert all(r["source"] != "idle_capacity" for r in a.sections["uncertainty"]["budget"])

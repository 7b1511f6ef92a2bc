"""Unit regressions kept as tests (issue 4): per-token scaling, lbs/MWh, daylight-saving days."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from carbon_bundles import carbon_bundle


def test_130_kg_per_billion_tokens_is_130_g_per_million_tokens():
    # A published SCI-for-AI example turned this into 0.13 g/Mtok (1,000x too small).
    from greencert.units import Q_

    per_token = Q_(130, "kgCO2e") / Q_(1e9, "token")
    assert per_token.to("gCO2e/Mtok").magnitude == pytest.approx(130.0, rel=1e-12)
    # By hand: 130,000 g / 1,000 Mtok.
    assert 130 * 1000 / (1e9 / 1e6) == 130.0


def test_130_kg_per_billion_tokens_through_the_carbon_report(tmp_path):
    from greencert.bundle import open_bundle
    from greencert.carbon.report import carbon_report
    from greencert.compute.metrics import compute_figures
    from greencert.grading import load_scheme

    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    # 100 kW for one hour at PUE 1 = 100 kWh; x 1,300 g/kWh = 130 kg; 10^9 output tokens.
    bundle_dir = carbon_bundle(
        tmp_path / "b",
        start,
        start + dt.timedelta(hours=1),
        power_w=100_000.0,
        tokens_per_hour=1e9,
        hourly_intensity=np.array([1300.0]),
    )
    bundle = open_bundle(bundle_dir)
    rep = carbon_report(bundle, compute_figures(bundle, load_scheme()))
    assert rep.metrics["carbon_location_per_million_tokens"] == {
        "value": pytest.approx(130.0),
        "unit": "gCO2e/Mtok",
    }


def test_lbs_per_mwh_to_g_per_kwh():
    from greencert.units import Q_

    # 1 lb = 453.59237 g exactly; 1 MWh = 1000 kWh: 1 lb/MWh = 0.45359237 g/kWh.
    assert Q_(1, "lbCO2e/MWh").to("gCO2e/kWh").magnitude == pytest.approx(0.45359237, rel=1e-12)
    assert Q_(870.0, "lbCO2e/MWh").to("gCO2e/kWh").magnitude == pytest.approx(
        870 * 453.59237 / 1000, rel=1e-12
    )


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-29", 23), ("2026-10-25", 25), ("2026-07-01", 24)],
)
def test_local_day_across_daylight_saving_has_the_right_number_of_hours(day, hours):
    from greencert.carbon.grid_sources import hours_of, local_day_utc
    from greencert.compute.integrate import hour_edges

    start, end = local_day_utc(dt.date.fromisoformat(day), "Europe/Berlin")
    assert (end - start) == dt.timedelta(hours=hours)
    assert hours_of(start, end).size == hours
    assert hour_edges(start.timestamp(), end.timestamp()).size - 1 == hours


def test_dst_day_bundle_is_certified_over_23_hours(tmp_path):
    from greencert.bundle import open_bundle
    from greencert.carbon.grid_sources import local_day_utc
    from greencert.compute.metrics import compute_figures
    from greencert.grading import load_scheme
    from greencert.pipeline import validate_stage

    start, end = local_day_utc(dt.date(2026, 3, 29), "Europe/Berlin")
    assert start == dt.datetime(2026, 3, 28, 23, tzinfo=dt.UTC)
    intensity = np.arange(23, dtype=float) * 10 + 200  # one value per UTC hour of the local day
    bundle_dir = carbon_bundle(tmp_path / "b", start, end, hourly_intensity=intensity)
    validate_stage(bundle_dir, tmp_path / "work")  # the grid file covers every hour: no missing hour
    fig = compute_figures(open_bundle(bundle_dir), load_scheme())
    assert fig.hour_starts.size == 23
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(23.0, rel=1e-12)
    assert fig.operational_carbon.to("gCO2e").magnitude == pytest.approx(float(intensity.sum()), rel=1e-12)

"""Location-based, market-based (hourly vs annual matching), embodied and SCI figures.

Expected values are worked out by hand or by a small reference loop written
here, from the declared inputs of analytic bundles (see tests/carbon_bundles.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from carbon_bundles import carbon_bundle, hourly_profile

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)
RESIDUAL = 500.0  # gCO2e/kWh, declared residual mix in these tests


def report_of(bundle_dir: Path):
    from greencert.bundle import open_bundle
    from greencert.carbon.report import carbon_report
    from greencert.compute.metrics import compute_figures
    from greencert.grading import load_scheme

    bundle = open_bundle(bundle_dir)
    fig = compute_figures(bundle, load_scheme())
    return carbon_report(bundle, fig), fig


def solar_profile_kwh() -> np.ndarray:
    """A solar PPA: 2 kWh in each hour 06:00-17:59 UTC, nothing at night (24 kWh a day)."""
    hours = np.arange(24)
    return np.where((hours >= 6) & (hours < 18), 2.0, 0.0)


def ppa(matching: str, **extra) -> dict:
    base = {
        "id": "ppa-solar-1",
        "type": "ppa",
        "matching": matching,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_to": "2027-01-01T00:00:00Z",
        "source": "test solar PPA, meter data of the generator",
    }
    base.update(extra)
    return base


def reference_market(consumption, supply_hourly, residual):
    """Tiny reference: hourly matching hour by hour, the rest at the residual mix."""
    matched = [min(c, s) for c, s in zip(consumption, supply_hourly, strict=True)]
    unmatched = [c - m for c, m in zip(consumption, matched, strict=True)]
    return sum(u * residual for u in unmatched), sum(matched) / sum(consumption)


def test_hourly_matching_differs_from_annual_matching(tmp_path):
    consumption = [1.0] * 24  # 1000 W at PUE 1.0 -> 1 kWh each hour
    supply = list(solar_profile_kwh())
    carbon = {
        "instruments": [ppa("hourly", profile_file="ppa_solar.csv", profile_unit="kWh")],
        "residual_mix": {"value": RESIDUAL, "unit": "gCO2e/kWh", "source": "test residual mix", "year": 2025},
    }
    hourly = carbon_bundle(
        tmp_path / "hourly",
        T0,
        T0 + DAY,
        carbon=carbon,
        tables={"ppa_solar.csv": hourly_profile(T0, 24, solar_profile_kwh())},
    )
    rep, _ = report_of(hourly)
    expected_g, expected_cfe = reference_market(consumption, supply, RESIDUAL)
    mtok = 24.0  # 1,000,000 output tokens an hour
    assert expected_cfe == 0.5 and expected_g == 12 * RESIDUAL
    assert rep.metrics["cfe_hourly_share"]["value"] == pytest.approx(expected_cfe, rel=1e-9)
    # Over the day the PPA delivered as much as was consumed: annual matching calls it 100 %.
    assert rep.metrics["annual_match_share"]["value"] == pytest.approx(1.0, rel=1e-9)
    assert rep.metrics["carbon_market_per_million_tokens"]["value"] == pytest.approx(
        expected_g / mtok, rel=1e-9
    )
    ppa_report = rep.section["market_based"]["instruments"][0]
    assert ppa_report["matched_mwh"] == pytest.approx(0.012, rel=1e-9)
    assert ppa_report["unused_mwh"] == pytest.approx(0.012, rel=1e-9)  # daytime surplus is lost

    # The same contract claimed with annual matching: its day's share of the volume covers everything.
    # Window 2026 = 365 days; a volume of 365 x 24 kWh credits exactly 24 kWh to this one-day period.
    carbon_annual = {
        "instruments": [ppa("annual", volume=f"{365 * 24} kWh")],
        "residual_mix": carbon["residual_mix"],
    }
    annual = carbon_bundle(tmp_path / "annual", T0, T0 + DAY, carbon=carbon_annual)
    rep_a, _ = report_of(annual)
    assert rep_a.metrics["carbon_market_per_million_tokens"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert rep_a.metrics["annual_match_share"]["value"] == pytest.approx(1.0, rel=1e-9)
    assert rep_a.metrics["cfe_hourly_share"]["value"] == 0.0  # no hourly data: no 24/7 claim
    # Location-based is untouched by instruments in both cases: 24 kWh x 400 g / 24 Mtok.
    for r in (rep, rep_a):
        assert r.metrics["carbon_location_per_million_tokens"]["value"] == pytest.approx(400.0, rel=1e-9)


def test_monthly_matching_stays_inside_its_month(tmp_path):
    start = dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    end = start + DAY  # 12 h in January, 12 h in February
    go = {
        "id": "go-jan",
        "type": "go",
        "matching": "monthly",
        "valid_from": "2026-01-01",
        "valid_to": "2026-02-01",
        "volume": "744 kWh",  # 1 kWh for each of January's 744 hours
        "source": "test GO, January production",
    }
    carbon = {
        "instruments": [go],
        "residual_mix": {"value": RESIDUAL, "unit": "gCO2e/kWh", "source": "test residual"},
    }
    rep, _ = report_of(carbon_bundle(tmp_path / "b", start, end, carbon=carbon))
    # January's 12 hours get 744 x 12/744 = 12 kWh: fully matched; February's 12 kWh pay the residual.
    assert rep.section["market_based"]["emissions"]["value"] == pytest.approx(12 * RESIDUAL, rel=1e-9)
    assert rep.metrics["annual_match_share"]["value"] == pytest.approx(0.5, rel=1e-9)


def test_supplier_rate_and_residual_fallback(tmp_path):
    supplier = {
        "id": "tariff-green-50",
        "type": "supplier",
        "matching": "annual",
        "valid_from": "2026-06-01",
        "valid_to": "2026-06-02",
        "volume": "0.012 MWh",  # half of the day's 24 kWh
        "emission_factor": {"value": 0.1, "unit": "kgCO2e/kWh", "source": "supplier disclosure"},
        "source": "supplier contract",
    }
    intensity = np.linspace(300.0, 530.0, 24)
    rep, _ = report_of(
        carbon_bundle(
            tmp_path / "b", T0, T0 + DAY, hourly_intensity=intensity, carbon={"instruments": [supplier]}
        )
    )
    # Each hour half matched at 100 g/kWh (pooled in proportion); the other half at that hour's grid average
    # because no residual mix is declared or known for the zone.
    expected = sum(0.5 * 100.0 + 0.5 * i for i in intensity)
    assert rep.section["market_based"]["emissions"]["value"] == pytest.approx(expected, rel=1e-9)
    assert rep.section["market_based"]["residual_mix"]["basis"] == "location-based fallback"
    assert rep.metrics["annual_match_share"]["value"] == 0.0  # a supplier rate is not carbon-free


def test_no_instruments_market_equals_location_with_residual_default(tmp_path):
    # Zone CN: the packaged residual default (MEE/NBS 2023 national factor excluding market-traded
    # non-fossil electricity, 0.6096 kgCO2/kWh) applies to all consumption.
    rep, _ = report_of(
        carbon_bundle(tmp_path / "b", T0, T0 + DAY, annual=530.6, grid_extra={"zone": "CN-East"}),
    )
    assert rep.metrics["carbon_market_per_million_tokens"]["value"] == pytest.approx(609.6, rel=1e-9)
    assert rep.metrics["carbon_location_per_million_tokens"]["value"] == pytest.approx(530.6, rel=1e-9)
    assert rep.metrics["hourly_intensity_share"]["value"] == 0.0
    assert "ANNUAL grid factor" in rep.section["location_based"]["note"]
    assert rep.section["market_based"]["residual_mix"]["basis"] == "default"


def test_embodied_defaults_match_hand_calculation(tmp_path):
    # 8 x H100 at 164 kg + one 8-GPU host at 5,700 kg over 3 x 365 days; a one-hour period.
    rep, _ = report_of(carbon_bundle(tmp_path / "b", T0, T0 + dt.timedelta(hours=1), scope={"gpu_count": 8}))
    per_hour_g = (8 * 164_000 + 5_700_000) / (3 * 365 * 24)  # ~266.8 g, EcoLogits' 3-year life
    assert rep.section["embodied"]["emissions"]["value"] == pytest.approx(per_hour_g, rel=1e-9)
    # R = 1 Mtok in this hour.
    assert rep.metrics["embodied_carbon_per_million_tokens"]["value"] == pytest.approx(per_hour_g, rel=1e-9)


def test_embodied_host_shared_by_gpu_count_and_declared_inventory(tmp_path):
    rep, _ = report_of(carbon_bundle(tmp_path / "a", T0, T0 + DAY, scope={"gpu_count": 2}))
    expected = (2 * 164_000 + 5_700_000 * 2 / 8) * 24 / (3 * 365 * 24)
    assert rep.section["embodied"]["emissions"]["value"] == pytest.approx(expected, rel=1e-9)

    inventory = {
        "embodied": {
            "hardware": [
                {
                    "item": "accelerator",
                    "count": 4,
                    "embodied": "0.2 tCO2e",
                    "lifetime": "5 year",
                    "resource_share": 0.5,
                    "source": "vendor PCF sheet",
                },
            ]
        }
    }
    rep2, _ = report_of(carbon_bundle(tmp_path / "b", T0, T0 + DAY, carbon=inventory))
    year_s = 365.25 * 86400  # pint's year is the Julian year
    expected2 = 4 * 200_000 * (86400 / (5 * year_s)) * 0.5
    assert rep2.section["embodied"]["emissions"]["value"] == pytest.approx(expected2, rel=1e-9)
    assert rep2.section["embodied"]["basis"] == "declared inventory"


def test_sci_components_sum_to_score_and_carry_sources(tmp_path):
    intensity = 350.0 + 50.0 * np.sin(np.arange(24) / 24 * 2 * np.pi)
    rep, fig = report_of(carbon_bundle(tmp_path / "b", T0, T0 + DAY, hourly_intensity=intensity, pue=1.25))
    sci = rep.section["sci"]
    # Exactly, in the decimals a reader sees: the score is the sum of the published components.
    total = sum(Decimal(repr(c["value"])) for c in sci["components"])
    assert total == Decimal(repr(sci["score"]["value"]))
    assert rep.metrics["sci_per_million_tokens"]["value"] == sci["score"]["value"]
    # E x I by hand: 1.25 kWh each hour x that hour's intensity; R = 24 Mtok; M from the defaults.
    e_x_i = sum(1.25 * i for i in intensity)
    m = (164_000 + 5_700_000 / 8) * 24 / (3 * 365 * 24)
    assert sci["score"]["value"] == pytest.approx((e_x_i + m) / 24.0, rel=1e-9)
    tags = {c["symbol"]: c["tag"] for c in sci["coefficients"]}
    assert tags == {
        "E": "modelled",
        "IT": "measured",
        "PUE": "sourced",
        "I": "sourced",
        "M": "sourced",
        "R": "measured",
    }
    for c in sci["coefficients"]:
        assert c["source"] and c["unit"] and isinstance(c["value"], float | int)
    assert rep.metrics["hourly_intensity_share"]["value"] == 1.0


def test_marginal_series_is_reported_apart(tmp_path):
    lbs = np.full(24, 1000.0)  # 1000 lbCO2e/MWh = 453.59237 gCO2e/kWh
    carbon = {"marginal": {"file": "marginal.csv", "unit": "lbCO2e/MWh", "source": "test MOER"}}
    table = {"marginal.csv": {"timestamp": T0.timestamp() + 3600.0 * np.arange(24), "rate": lbs}}
    rep, _ = report_of(carbon_bundle(tmp_path / "b", T0, T0 + DAY, carbon=carbon, tables=table))
    marginal = rep.section["marginal"]
    assert marginal["mean_rate"]["value"] == pytest.approx(453.59237, rel=1e-9)
    assert marginal["emissions"]["value"] == pytest.approx(24 * 453.59237, rel=1e-9)
    # Average-based figures do not move: location is still 400 g/kWh.
    assert rep.metrics["carbon_location_per_million_tokens"]["value"] == pytest.approx(400.0, rel=1e-9)
    assert not any("marginal" in k for k in rep.metrics)


def test_bad_instrument_profile_fails_validation_naming_the_line(tmp_path):
    from greencert.errors import BundleError
    from greencert.pipeline import validate_stage

    profile = solar_profile_kwh()
    profile[7] = -1.0
    bundle = carbon_bundle(
        tmp_path / "b",
        T0,
        T0 + DAY,
        carbon={"instruments": [ppa("hourly", profile_file="ppa.csv", profile_unit="kWh")]},
        tables={"ppa.csv": hourly_profile(T0, 24, profile)},
    )
    with pytest.raises(BundleError) as err:
        validate_stage(bundle, tmp_path / "work")
    assert "ppa.csv line 9" in str(err.value) and "negative" in str(err.value)


@pytest.mark.parametrize(
    ("carbon", "message"),
    [
        ({"instruments": [ppa("hourly")]}, "hourly matching needs profile_file"),
        ({"instruments": [ppa("annual")]}, "annual matching needs volume"),
        ({"instruments": [ppa("annual", volume="12 kg")]}, "volume"),
        ({"residual_mix": {"value": 1, "unit": "kWh", "source": "x"}}, "residual_mix.unit"),
        (
            {
                "embodied": {
                    "hardware": [{"item": "x", "embodied": "1 kWh", "lifetime": "3 year", "source": "s"}]
                }
            },
            "embodied",
        ),
        ({"instrumentz": []}, "unknown key"),
    ],
)
def test_bad_carbon_section_is_rejected_by_key(tmp_path, carbon, message):
    from greencert.bundle import open_bundle
    from greencert.errors import BundleError

    target = tmp_path / "b"
    try:
        carbon_bundle(target, T0, T0 + DAY, carbon=carbon)
    except BundleError as exc:  # write_bundle validates the manifest first
        assert message in str(exc)
        return
    with pytest.raises(BundleError) as err:
        open_bundle(target)
    assert message in str(err.value)


def test_certificate_carries_carbon_figures_and_verifies(tmp_path):
    from greencert.certificate.verify import TrustOptions, verify_certificate
    from greencert.errors import VerificationFailed
    from greencert.pipeline import certify

    carbon = {
        "instruments": [ppa("hourly", profile_file="ppa_solar.csv", profile_unit="kWh")],
        "residual_mix": {"value": RESIDUAL, "unit": "gCO2e/kWh", "source": "test residual mix", "year": 2025},
    }
    bundle = carbon_bundle(
        tmp_path / "b",
        T0,
        T0 + DAY,
        carbon=carbon,
        tables={"ppa_solar.csv": hourly_profile(T0, 24, solar_profile_kwh())},
    )
    path = Path(certify(bundle, tmp_path / "registry"))
    cert = json.loads(path.read_text())
    units = {k: cert["metrics"][k]["unit"] for k in cert["metrics"]}
    for name in (
        "carbon_location_per_million_tokens",
        "carbon_market_per_million_tokens",
        "embodied_carbon_per_million_tokens",
        "sci_per_million_tokens",
    ):
        assert units[name] == "gCO2e/Mtok"
    for name in ("cfe_hourly_share", "annual_match_share", "hourly_intensity_share"):
        assert units[name] == "fraction"
    # The grade still uses the location-based figure.
    assert (
        cert["metrics"]["carbon_per_million_tokens"] == cert["metrics"]["carbon_location_per_million_tokens"]
    )
    assert cert["carbon"]["location_based"]["used_for_grade"] is True
    assert cert["carbon"]["market_based"]["used_for_grade"] is False
    assert "ppa_solar.csv" in {i["file"] for i in cert["inputs"]}
    # Checked inside the validity window (never against today's date: the test data is fixed).
    checked_at = T0 + 2 * DAY
    assert verify_certificate(path, at=checked_at, options=TrustOptions(allow_development_key=True)).lines[
        -1
    ].startswith("recomputed figures: ok")
    # The delivery profile is evidence: changing it breaks verification.
    evidence = path.parent / cert["evidence"]["bundle"] / "ppa_solar.csv"
    lines = evidence.read_text().splitlines()
    lines[8] = lines[8].rsplit(",", 1)[0] + ",3"  # 07:00 delivery 2 -> 3 kWh
    evidence.write_text("\n".join(lines) + "\n")
    with pytest.raises(VerificationFailed) as err:
        verify_certificate(path, at=checked_at, options=TrustOptions(allow_development_key=True))
    assert err.value.reason == "input-hash-mismatch"
    assert math.isclose(cert["metrics"]["cfe_hourly_share"]["value"], 0.5)

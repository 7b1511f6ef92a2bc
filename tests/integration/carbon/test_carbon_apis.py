"""Grid API clients against a local HTTP server answering in the documented shapes, faults included."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from carbon_api_server import EM_KEY, WT_PASSWORD, WT_USER, ApiStandIn, em_intensity, wt_rate

pytestmark = pytest.mark.integration

DAY0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture
def api():
    server = ApiStandIn().start()
    yield server
    server.stop()


class Sleeps(list):
    """Records the waits a client asks for (a clock, so the tests need not wait)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def em_client(api, sleeps=None, key=EM_KEY, **kw):
    from greencert.carbon.grid_sources import Credentials, ElectricityMaps

    return ElectricityMaps(
        Credentials(api.url, None, key), sleep=sleeps if sleeps is not None else Sleeps(), **kw
    )


def wt_client(api, sleeps=None, **kw):
    from greencert.carbon.grid_sources import Credentials, WattTime

    return WattTime(
        Credentials(api.url, WT_USER, WT_PASSWORD), sleep=sleeps if sleeps is not None else Sleeps(), **kw
    )


def hours(start: dt.datetime, n: int) -> np.ndarray:
    return start.timestamp() + 3600.0 * np.arange(n)


def test_electricity_maps_429_retry_missing_hours_and_estimates(api):
    h = hours(DAY0, 48)
    api.scenario.em_429 = 1
    api.scenario.retry_after = "2"
    api.scenario.em_missing = {h[5], h[6]}  # an interior run of two hours: interpolated
    api.scenario.em_null = {h[0]}  # first hour without a value: nearest hour at the edge
    api.scenario.em_estimated = {h[20]}
    sleeps = Sleeps()
    data = em_client(api, sleeps).past_range("DE", DAY0, DAY0 + dt.timedelta(days=2))
    assert sleeps == [2.0]  # waited exactly Retry-After once, then got the data
    assert data.hours.size == 48
    expected = np.array([em_intensity(t) for t in h])
    # Documented fill rule, by hand: hour 0 takes hour 1's value; 5 and 6 lie on the line from 4 to 7.
    expected[0] = em_intensity(h[1])
    v4, v7 = em_intensity(h[4]), em_intensity(h[7])
    expected[5] = v4 + (v7 - v4) * 1 / 3
    expected[6] = v4 + (v7 - v4) * 2 / 3
    np.testing.assert_allclose(data.values, expected, rtol=1e-12)
    assert list(np.flatnonzero(data.filled)) == [0, 5, 6]
    assert data.is_estimated[20] and data.is_estimated[5] and not data.is_estimated[10]
    assert data.provenance["filled_hours"] == 3
    assert data.provenance["estimated_hours"] == 4
    assert data.provenance["retries"] == 1
    assert data.estimation_method[5] == "greencert-linear-interpolation"
    assert data.estimation_method[0] == "greencert-nearest-hour"
    assert data.estimation_method[20] == "TIME_SLICER_AVERAGE"


def test_electricity_maps_chunks_ranges_of_ten_days(api):
    start = DAY0
    end = DAY0 + dt.timedelta(days=12)
    data = em_client(api).past_range("FR", start, end)
    assert data.hours.size == 12 * 24 and not data.filled.any()
    calls = [p for path, p in api.scenario.requests if path.endswith("past-range")]
    assert [(c["start"], c["end"]) for c in calls] == [
        ("2026-06-01T00:00:00Z", "2026-06-11T00:00:00Z"),
        ("2026-06-11T00:00:00Z", "2026-06-13T00:00:00Z"),
    ]
    assert all(c["temporalGranularity"] == "hourly" and c["emissionFactorType"] == "lifecycle" for c in calls)


def test_electricity_maps_berlin_dst_day_is_23_hours(api):
    from greencert.carbon.grid_sources import local_day_utc

    start, end = local_day_utc(dt.date(2026, 3, 29), "Europe/Berlin")
    data = em_client(api).past_range("DE", start, end)
    assert data.hours.size == 23
    (_, params), *_ = api.scenario.requests
    assert (params["start"], params["end"]) == ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda s: None, {"key": "wrong-key"}, "HTTP 401: Invalid authentication token"),
        (lambda s: None, {"zone": "XX"}, "Zone 'XX' does not exist"),
        (lambda s: setattr(s, "em_500_always", True), {}, "HTTP 503 after 3 attempt(s)"),
        (lambda s: setattr(s, "em_429", 10), {}, "HTTP 429 after 3 attempt(s)"),
        (
            lambda s: setattr(s, "em_factor_type_override", "direct"),
            {},
            "asked for lifecycle factors, got 'direct'",
        ),
        (lambda s: setattr(s, "retry_after", "3600") or setattr(s, "em_429", 1), {}, "Retry-After 3600 s"),
    ],
)
def test_electricity_maps_errors_are_clear_and_keep_the_key_secret(api, setup, kwargs, message):
    from greencert.errors import SourceError

    setup(api.scenario)
    key = kwargs.pop("key", EM_KEY)
    zone = kwargs.pop("zone", "DE")
    with pytest.raises(SourceError) as err:
        em_client(api, key=key, max_retries=2).past_range(zone, DAY0, DAY0 + dt.timedelta(hours=6))
    text = f"{err.value} {err.value.where}"
    assert message in text
    assert "Electricity Maps" in text and zone in text
    assert EM_KEY not in text and "wrong-key" not in text


def test_electricity_maps_refuses_gaps_longer_than_the_rule(api):
    from greencert.errors import SourceError

    h = hours(DAY0, 24)
    api.scenario.em_missing = set(h[8:12])  # four hours in a row
    with pytest.raises(SourceError) as err:
        em_client(api).past_range("DE", DAY0, DAY0 + dt.timedelta(days=1), max_fill_hours=3)
    assert "4 consecutive hour(s) missing from 2026-06-01T08:00:00Z" in str(err.value)


def test_watttime_login_historical_hourly_means_retry_and_relogin(api):
    start, end = DAY0, DAY0 + dt.timedelta(days=1)
    api.scenario.wt_429 = 1
    api.scenario.wt_token_uses = 1  # the first token dies after one request: the client logs in again
    h = hours(start, 24)
    # Leave out every 5-minute point of hour 3: that hour is interpolated (and counted).
    api.scenario.wt_missing = {h[3] + 300.0 * k for k in range(12)}
    sleeps = Sleeps()
    data = wt_client(api, sleeps).historical("CAISO_NORTH", start, end)
    assert sleeps == [1.0]
    assert api.scenario.logins == 2
    assert data.unit == "lbCO2e/MWh"
    # Hourly mean of the 12 five-minute points; the server's end is inclusive, so the point at `end`
    # belongs to no hour of the period.
    expected = np.array([np.mean([wt_rate(t + 300.0 * k) for k in range(12)]) for t in h])
    expected[3] = (expected[2] + expected[4]) / 2
    np.testing.assert_allclose(data.values, expected, rtol=1e-12)
    assert data.filled_hours == 1 and data.provenance["units"] == "lbs_co2_per_mwh"


def test_watttime_bad_password_is_a_clear_error(api):
    from greencert.carbon.grid_sources import Credentials, WattTime
    from greencert.errors import SourceError

    client = WattTime(Credentials(api.url, WT_USER, "not-the-password"), sleep=Sleeps())
    with pytest.raises(SourceError) as err:
        client.historical("CAISO_NORTH", DAY0, DAY0 + dt.timedelta(hours=2))
    assert "WattTime login failed: HTTP 403" in str(err.value)
    assert "not-the-password" not in str(err.value)


def test_fleet_extract_fetches_into_the_bundle_and_certificate_verifies(api, tmp_path, monkeypatch, caplog):
    """Airflow connections from AIRFLOW_CONN_*, grid and marginal written into the bundle, then certify+verify."""
    import yaml

    from greencert.certificate.verify import TrustOptions, verify_certificate
    from greencert.pipeline import certify
    from greencert.sources.extract import extract_stage

    monkeypatch.setenv(
        "AIRFLOW_CONN_GC_TEST_EM", json.dumps({"conn_type": "http", "host": api.url, "password": EM_KEY})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_GC_TEST_WT",
        json.dumps({"conn_type": "http", "host": api.url, "login": WT_USER, "password": WT_PASSWORD}),
    )
    start = dt.datetime(2026, 6, 2, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    h = hours(start, 24)
    api.scenario.em_missing = {h[10]}
    (tmp_path / "contracts").mkdir()
    solar = np.where((np.arange(24) >= 6) & (np.arange(24) < 18), 0.5, 0.0)
    (tmp_path / "contracts" / "ppa.csv").write_text(
        "timestamp,energy\n"
        + "".join(
            f"{dt.datetime.fromtimestamp(t, dt.UTC):%Y-%m-%dT%H:%M:%SZ},{e}\n"
            for t, e in zip(h, solar, strict=True)
        )
    )
    config = {
        "registry": "registry",
        "work_dir": "work",
        "deployments": [{"deployment": "chat-8b", "source": {"kind": "simulated", "step_seconds": 60}}],
        "carbon": {
            "dc-east-1": {
                "grid": {"kind": "electricitymaps", "zone": "US-MIDA-PJM", "conn_id": "gc_test_em"},
                "marginal": {"kind": "watttime", "region": "PJM_DC", "conn_id": "gc_test_wt"},
                "files": {"ppa_solar.csv": "contracts/ppa.csv"},
                "manifest": {
                    "instruments": [
                        {
                            "id": "ppa-1",
                            "type": "ppa",
                            "matching": "hourly",
                            "profile_file": "ppa_solar.csv",
                            "profile_unit": "kWh",
                            "valid_from": "2026-01-01",
                            "valid_to": "2027-01-01",
                            "source": "PPA #1 generator meter",
                        }
                    ],
                    "residual_mix": {
                        "value": 450,
                        "unit": "gCO2e/kWh",
                        "source": "test residual",
                        "year": 2025,
                    },
                },
            }
        },
    }
    cfg_path = tmp_path / "fleet.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    caplog.set_level(logging.DEBUG)
    bundle = Path(extract_stage(cfg_path, "chat-8b", start, end))
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    assert manifest["grid"]["file"] == "grid.csv" and manifest["grid"]["zone"] == "US-MIDA-PJM"
    assert manifest["provenance"]["grid"]["filled_hours"] == 1
    assert manifest["carbon"]["marginal"]["unit"] == "lbCO2e/MWh"
    grid_rows = (bundle / "grid.csv").read_text().splitlines()
    assert grid_rows[0] == "timestamp,intensity,is_estimated,estimation_method,emission_factor_type,filled"
    assert len(grid_rows) == 25 and grid_rows[11].endswith(",true")  # hour 10 was filled
    cert_path = Path(certify(bundle, tmp_path / "registry"))
    cert = json.loads(cert_path.read_text())
    m = cert["metrics"]
    facility = np.array(cert["hourly"]["facility_energy_kwh"])
    intensity = np.array(cert["hourly"]["grid_intensity_gco2e_per_kwh"])
    expected_grid = np.array([em_intensity(t) for t in h])
    expected_grid[10] = (expected_grid[9] + expected_grid[11]) / 2
    np.testing.assert_allclose(intensity, expected_grid, rtol=1e-9)
    # 23 of 24 hours carry a genuine hourly value: the share is energy-weighted.
    assert m["hourly_intensity_share"]["value"] == pytest.approx(1 - facility[10] / facility.sum(), rel=1e-9)
    # Marginal kept apart, converted from lbs/MWh with pint.
    moer = np.array([np.mean([wt_rate(t + 300.0 * k) for k in range(12)]) for t in h]) * 0.45359237
    assert cert["carbon"]["marginal"]["emissions"]["value"] == pytest.approx(
        float((facility * moer).sum()), rel=1e-6
    )
    # Market-based by hand: hourly PPA, 450 g/kWh for the rest.
    unmatched = np.maximum(facility - solar, 0.0)
    mtok = m["output_tokens"]["value"] / 1e6
    assert m["carbon_market_per_million_tokens"]["value"] == pytest.approx(
        float(unmatched.sum() * 450 / mtok), rel=1e-6
    )
    assert m["cfe_hourly_share"]["value"] == pytest.approx(
        float(np.minimum(facility, solar).sum() / facility.sum()), rel=1e-6
    )
    checked_at = start + dt.timedelta(days=2)  # inside the validity window, whatever today is
    assert verify_certificate(cert_path, at=checked_at, options=TrustOptions(allow_development_key=True)).lines[
        -1
    ].startswith("recomputed figures: ok")
    # The API secrets are nowhere: not in the bundle, the registry or the logs.
    for path in [*bundle.rglob("*"), *(tmp_path / "registry").rglob("*")]:
        if path.is_file():
            content = path.read_bytes()
            assert EM_KEY.encode() not in content and WT_PASSWORD.encode() not in content, path
    assert EM_KEY not in caplog.text and WT_PASSWORD not in caplog.text

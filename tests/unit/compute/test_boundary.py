"""Full-stack boundary of scheme 2026.3 (compute/boundary.py, docs/boundary.md).

Every bundle is one or more GPUs at constant power for one hour with 1,000,000 output tokens, so
each component follows by hand from the factors written out here (Google 2025, arXiv 2508.15734:
accelerators 58 %, host 25 %, idle 10 % of a prompt's energy; node/GPU ratio 1.45 of the
uncertainty defaults).
"""

from __future__ import annotations

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.compute.boundary import boundary_defaults, boundary_section
from greencert.compute.metrics import compute_figures
from greencert.errors import BundleError
from greencert.grading import SCHEME_DIR, load_scheme
from integrity_bundles import build, times

S3 = SCHEME_DIR / "greencert-2026.3.yaml"
S2 = SCHEME_DIR / "greencert-2026.2.yaml"
IDLE = 10 / 83  # Google 2025: idle 10 % against 58 % + 25 % for the serving machines
ACC_SHARE = 58 / 83
NODE_RATIO = 1.45


def _figs(path, scheme_path=S3):
    scheme = load_scheme(scheme_path)
    bundle = open_bundle(path)
    fig = compute_figures(bundle, scheme)
    return bundle, scheme, fig


def _components(bundle, scheme, fig):
    section = boundary_section(bundle, fig, boundary_defaults(scheme))
    return section, {c["component"]: c for c in section["components"]}


def test_gpu_series_without_node_meter(tmp_path):
    path = build(tmp_path / "b", power=500.0, power_spec={"meter_class": "gpu_sensor"})
    bundle, scheme, fig = _figs(path)
    gpu = 0.5  # kWh: 500 W for one hour
    it = gpu * NODE_RATIO
    idle = it * IDLE
    facility = (it + idle) * 1.2
    assert fig.it_energy.to("kWh").magnitude == pytest.approx(it, rel=1e-12)
    assert fig.idle_capacity_energy.to("kWh").magnitude == pytest.approx(idle, rel=1e-12)
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(facility, rel=1e-12)
    # 1,000,000 output tokens: kWh/Mtok equals the facility kWh; the PUE stays the declared one.
    assert fig.energy_per_million_tokens.to("kWh/Mtok").magnitude == pytest.approx(facility, rel=1e-12)
    assert fig.pue == pytest.approx(1.2, rel=1e-12)
    assert fig.operational_carbon.to("gCO2e").magnitude == pytest.approx(facility * 400, rel=1e-12)
    assert (fig.idle_capacity.share, fig.idle_capacity.low, fig.idle_capacity.basis) == (
        pytest.approx(IDLE),
        0.0,
        "estimated",
    )
    assert fig.idle_capacity.high == pytest.approx(2 * IDLE)
    section, c = _components(bundle, scheme, fig)
    expected = {
        "accelerator": (gpu, "measured"),
        "host": (it - gpu, "estimated"),
        "idle_capacity": (idle, "estimated"),
        "facility_overhead": (facility - it - idle, "declared"),
    }
    for name, (energy, basis) in expected.items():
        assert c[name]["energy"]["value"] == pytest.approx(energy, rel=1e-10), name
        assert c[name]["per_million_tokens"]["value"] == pytest.approx(energy, rel=1e-10), name
        assert c[name]["share"] == pytest.approx(energy / facility, rel=1e-8), name
        assert c[name]["basis"] == basis, name
    assert "2508.15734" in section["method"]
    total = sum(c[n]["energy"]["value"] for n in expected)
    assert total == pytest.approx(facility, rel=1e-10)
    assert section["total_per_million_tokens"]["value"] == fig.metrics()["energy_per_million_tokens"]["value"]
    assert fig.metrics()["idle_capacity_energy"] == {"value": pytest.approx(idle, rel=1e-11), "unit": "kWh"}


def test_node_level_series_splits_by_google_shares(tmp_path):
    path = build(tmp_path / "b", power=1000.0, power_spec={"meter_class": "node_meter"})
    bundle, scheme, fig = _figs(path)
    it = 1.0  # the node meter is the whole IT energy
    _, c = _components(bundle, scheme, fig)
    assert c["accelerator"]["energy"]["value"] == pytest.approx(it * ACC_SHARE, rel=1e-10)
    assert c["host"]["energy"]["value"] == pytest.approx(it * (1 - ACC_SHARE), rel=1e-10)
    assert c["accelerator"]["basis"] == c["host"]["basis"] == "estimated"
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(it * (1 + IDLE) * 1.2, rel=1e-12)


def test_node_meter_makes_host_measured(tmp_path):
    t = times()
    node = {"timestamp": t, "device": np.full(t.size, "node0"), "value": np.full(t.size, 800.0)}
    spec = {
        "name": "bmc",
        "file": "node.csv",
        "kind": "gauge",
        "unit": "W",
        "layer": "node",
        "meter_class": "node_meter",
    }
    path = build(tmp_path / "b", power=500.0, power_spec={"meter_class": "gpu_sensor"}, meters=[(spec, node)])
    bundle, scheme, fig = _figs(path)
    _, c = _components(bundle, scheme, fig)
    assert c["accelerator"]["energy"]["value"] == pytest.approx(0.5, rel=1e-10)
    assert c["host"]["energy"]["value"] == pytest.approx(0.3, rel=1e-10)
    assert c["host"]["basis"] == c["accelerator"]["basis"] == "measured"


@pytest.mark.parametrize(
    ("spec", "share", "basis"),
    [
        ({"basis": "metered"}, 0.0, "declared"),
        ({"basis": "declared", "share": 0.05, "source": "operator capacity plan 2026-Q1"}, 0.05, "declared"),
    ],
)
def test_declared_idle_capacity(tmp_path, spec, share, basis):
    path = build(
        tmp_path / "b",
        power=1000.0,
        power_spec={"meter_class": "node_meter"},
        manifest_extra={"idle_capacity": spec},
    )
    bundle, scheme, fig = _figs(path)
    assert fig.idle_capacity.share == share
    assert fig.idle_capacity.low == fig.idle_capacity.high == share
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(1.0 * (1 + share) * 1.2, rel=1e-12)
    _, c = _components(bundle, scheme, fig)
    assert c["idle_capacity"]["basis"] == basis
    assert c["idle_capacity"]["energy"]["value"] == pytest.approx(share, abs=1e-15)


def test_measured_pue_applies_to_it_plus_idle(tmp_path):
    t = times()
    fac = {"timestamp": t, "value": np.full(t.size, 1300.0)}
    itm = {"timestamp": t, "value": np.full(t.size, 1000.0)}
    facility = {
        "meter": {"file": "facility.csv", "kind": "gauge", "unit": "W", "meter_class": "revenue_meter"},
        "it_meter": {"file": "it.csv", "kind": "gauge", "unit": "W", "meter_class": "revenue_meter"},
    }
    path = build(
        tmp_path / "b",
        power=1000.0,
        power_spec={"meter_class": "node_meter"},
        facility=facility,
        extra_tables={"facility.csv": fac, "it.csv": itm},
    )
    bundle, scheme, fig = _figs(path)
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(1.0 * (1 + IDLE) * 1.3, rel=1e-12)
    assert fig.pue == pytest.approx(1.3, rel=1e-12)
    _, c = _components(bundle, scheme, fig)
    assert c["facility_overhead"]["basis"] == "measured"
    assert c["facility_overhead"]["energy"]["value"] == pytest.approx(0.3 * (1 + IDLE), rel=1e-10)
    # The whole compute stage (interval model included) reproduces the same full-stack figure.
    from greencert.pipeline import figures_document

    doc = figures_document(bundle, scheme, {"suites": [], "rows": {}})
    epm = doc["metrics"]["energy_per_million_tokens"]
    assert epm["value"] == pytest.approx(1.3 * (1 + IDLE), rel=1e-10)
    assert epm["interval95"][0] <= epm["value"] <= epm["interval95"][1]
    assert doc["boundary"]["total_per_million_tokens"]["value"] == epm["value"]


def test_scheme_2026_2_adds_nothing(tmp_path):
    path = build(tmp_path / "b", power=500.0, power_spec={"meter_class": "gpu_sensor"})
    _, _, fig = _figs(path, S2)
    assert fig.idle_capacity is None and fig.idle_capacity_energy is None
    assert fig.facility_energy.to("kWh").magnitude == pytest.approx(0.5 * NODE_RATIO * 1.2, rel=1e-12)
    assert "idle_capacity_energy" not in fig.metrics()
    assert boundary_defaults(load_scheme(S2)) is None


def test_idle_capacity_declared_without_source_is_rejected(tmp_path):
    with pytest.raises(BundleError, match="idle_capacity"):
        build(tmp_path / "b", manifest_extra={"idle_capacity": {"basis": "declared", "share": 0.1}})
    with pytest.raises(BundleError, match="idle_capacity"):
        build(tmp_path / "c", manifest_extra={"idle_capacity": {"basis": "metered", "share": 0.1}})


def test_sci_energy_coefficient_names_the_idle_capacity(tmp_path):
    # 1,000 W of whole nodes for one hour (1 kWh IT), idle capacity estimated at 10/83, PUE 1.2.
    from greencert.carbon.report import carbon_report

    bundle_path = build(tmp_path / "b", power=1000.0, power_spec={"meter_class": "node_meter"})
    scheme = load_scheme(S3)
    bundle = open_bundle(bundle_path)
    fig = compute_figures(bundle, scheme)
    coefficients = {c["symbol"]: c for c in carbon_report(bundle, fig).section["sci"]["coefficients"]}
    assert coefficients["IT"]["value"] == pytest.approx(1.0)
    assert coefficients["IDLE"]["value"] == pytest.approx(10 / 83)
    assert coefficients["E"]["value"] == pytest.approx((1.0 + 10 / 83) * 1.2)
    assert "idle provisioned capacity" in coefficients["E"]["name"]

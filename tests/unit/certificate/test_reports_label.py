"""Standard reports (SCI, EU EED, GB 40879) and the label HTML, on hand-made certificates."""

from __future__ import annotations

import copy
import json

import pytest

from greencert.certificate import label, reports


def base_certificate() -> dict:
    """Analytic case: 0.5 kWh IT x PUE 1.2 = 0.6 kWh; 400 g/kWh -> 240 g; 2,000,000 output tokens."""
    return {
        "certificate_format": "greencert-certificate/1",
        "certificate_id": "dc-t.chat.20260101T0000Z-20260101T0300Z",
        "scope": {
            "site": "dc-t",
            "deployment": "chat",
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "hardware": "1x H100",
            "active_params_billions": 8,
        },
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"},
        "issued_at": "2026-01-01T03:00:00Z",
        "valid_until": "2026-07-01T03:00:00Z",
        "scheme": {"id": "greencert-inference", "version": "2026.1"},
        "grade": "D",
        "grading": {
            "overall": "D",
            "energy": "D",
            "carbon": "C",
            "size_class": "<=20B",
            "energy_band_edges": {"unit": "kWh/Mtok", "upper_edges": [0.03, 0.06, 0.12, 0.25, 0.5, 1.0]},
            "carbon_band_edges": {"unit": "gCO2e/Mtok", "upper_edges": [9, 18, 36, 75, 150, 300]},
        },
        "metrics": {
            "it_energy": {"value": 0.5, "unit": "kWh"},
            "facility_energy": {"value": 0.6, "unit": "kWh"},
            "output_tokens": {"value": 2_000_000, "unit": "token"},
            "operational_carbon": {"value": 240.0, "unit": "gCO2e"},
            "energy_per_million_tokens": {"value": 0.3, "unit": "kWh/Mtok"},
            "carbon_per_million_tokens": {"value": 120.0, "unit": "gCO2e/Mtok"},
        },
        "methodology": {
            "pue": 1.2,
            "pue_basis": "declared",
            "grid_basis": "annual",
            "grid_source": "test factor",
            "hourly_intensity_share": 0.0,
            "power_kind": "gauge",
            "power_unit": "W",
            "integration": "trapezoid",
            "tokens": "counter increase",
            "carbon": "location-based",
        },
        "data_quality": {
            "coverage": 1.0,
            "validation_success": True,
            "expectations_evaluated": 30,
            "rows": {"power.csv": 721},
            "devices": 1,
        },
        "hourly": {
            "hour_start": [1767225600, 1767229200, 1767232800],
            "facility_energy_kwh": [0.1, 0.2, 0.3],
            "output_tokens": [0.0, 500_000.0, 1_500_000.0],
        },
        "inputs": [{"file": "power.csv", "sha256": "00"}],
        "signing": {"algorithm": "Ed25519", "key_id": "ab" * 16, "development_key": True},
    }


@pytest.mark.parametrize(
    ("pue", "grade"),
    [(1.0, 1), (1.2, 1), (1.2000001, 2), (1.3, 2), (1.31, 3), (1.5, 3), (1.5000001, None), (2.0, None)],
)
def test_gb40879_grade_edges(pue: float, grade: int | None) -> None:
    assert reports.gb40879_grade(pue) == grade


def test_gb40879_report() -> None:
    cert = base_certificate()
    cert["methodology"]["pue"] = 1.25
    rep = reports.gb40879_report(cert)
    assert rep["grade"] == 2 and rep["meets_limit_value"] is True
    assert rep["thresholds"][0] == {
        "grade": 1,
        "max_pue": 1.2,
        "note": "as commonly quoted; check the standard's text",
    }
    cert["methodology"]["pue"] = 1.6
    assert reports.gb40879_report(cert)["meets_limit_value"] is False


def test_sci_without_carbon_section_is_operational_only() -> None:
    rep = reports.sci_report(base_certificate())
    # (E x I) / R = 240 g / 2 Mtok = 120 gCO2e/Mtok; I = 240 g / 0.6 kWh = 400 g/kWh.
    assert rep["score"] == {
        "value": pytest.approx(120.0),
        "unit": "gCO2e/Mtok",
        "formula": "SCI (operational part) = (E x I) / R",
        "includes_embodied": False,
    }
    coeff = {c["symbol"]: c for c in rep["coefficients"]}
    assert coeff["I"]["value"] == pytest.approx(400.0)
    assert coeff["E"]["value"] == pytest.approx(0.6)
    assert coeff["R"]["value"] == pytest.approx(2.0) and coeff["R"]["unit"] == "Mtok"
    assert coeff["M"]["value"] is None and "not quantified" in coeff["M"]["source"]
    assert "lower bound" in rep["note"]
    assert "no carbon.sci" in rep["components_source"]
    assert all(c["source"] for c in rep["coefficients"])


def test_sci_uses_carbon_module_components() -> None:
    cert = base_certificate()
    cert["carbon"] = {
        "sci": {
            "coefficients": [
                {
                    "symbol": "E",
                    "name": "E",
                    "value": 0.6,
                    "unit": "kWh",
                    "source": "meter",
                    "tag": "measured",
                },
                {
                    "symbol": "I",
                    "name": "I",
                    "value": 400.0,
                    "unit": "gCO2e/kWh",
                    "source": "grid",
                    "tag": "sourced",
                },
                {
                    "symbol": "M",
                    "name": "M",
                    "value": 60.0,
                    "unit": "gCO2e",
                    "source": "inventory",
                    "tag": "sourced",
                },
                {
                    "symbol": "R",
                    "name": "R",
                    "value": 2.0,
                    "unit": "Mtok",
                    "source": "counters",
                    "tag": "measured",
                },
            ],
            "components": [
                {"name": "operational", "unit": "gCO2e/Mtok", "value": 120.0},
                {"name": "embodied", "unit": "gCO2e/Mtok", "value": 30.0},
            ],
            "score": {"value": 150.0, "unit": "gCO2e/Mtok"},
            "formula": "SCI = ((E x I) + M) / R",
        }
    }
    rep = reports.sci_report(cert)
    assert rep["score"]["value"] == 150.0 and rep["score"]["includes_embodied"] is True
    assert rep["note"] is None
    assert [c["symbol"] for c in rep["coefficients"]] == ["E", "I", "M", "R"]
    assert rep["quantification_method"]["M"] == "inventory"
    md = reports.sci_markdown(rep)
    assert "## (What) Software boundary" in md and "## (Scale) Functional unit" in md
    assert "| M | M | 60 | gCO2e | inventory |" in md
    assert "**SCI = 150 gCO2e/Mtok**" in md


def test_eed_renewable_energy_factor_from_instruments() -> None:
    cert = base_certificate()
    assert reports.eed_report(cert)["indicators"]["renewable_energy_factor"]["value"] is None
    cert["carbon"] = {
        "market_based": {
            "instruments": [
                # 0.00024 MWh = 0.24 kWh of renewable energy matched out of 0.6 kWh -> REF 0.4
                {"id": "go-1", "type": "go", "carbon_free": True, "matched_mwh": 0.00024},
                # not renewable: supplier-specific rate, and a GO declared not carbon-free
                {"id": "sup", "type": "supplier", "carbon_free": False, "matched_mwh": 0.0001},
                {"id": "go-2", "type": "go", "carbon_free": False, "matched_mwh": 0.0001},
            ]
        }
    }
    rep = reports.eed_report(cert)
    assert rep["indicators"]["renewable_energy_factor"]["value"] == pytest.approx(0.4)
    assert rep["indicators"]["pue"]["value"] == 1.2
    assert rep["indicators"]["energy_consumption"]["value"] == 0.6


def test_reports_are_deterministic_json() -> None:
    first = reports.build_reports(base_certificate())
    second = reports.build_reports(copy.deepcopy(base_certificate()))
    assert first == second
    assert set(first) == {"sci.json", "sci.md", "eu-eed.json", "gb-40879.json"}
    for name in ("sci.json", "eu-eed.json", "gb-40879.json"):
        json.loads(first[name])


@pytest.mark.parametrize(("value", "ceiling"), [(3.2, 5), (0.031, 0.05), (7, 10), (1, 1), (2.4, 2.5), (0, 1)])
def test_nice_ceiling(value: float, ceiling: float) -> None:
    assert label._nice_ceiling(value) == pytest.approx(ceiling)


def test_chart_geometry() -> None:
    chart = label.build_chart(base_certificate()["hourly"])
    # Energy axis max: nice ceiling of 0.3 kWh is 0.5; bars are 0.2, 0.4, 0.6 of the plot height.
    h = chart.plot["h"]
    assert [b["h"] / h for b in chart.bars] == pytest.approx([0.2, 0.4, 0.6])
    assert chart.left_ticks[-1]["label"] == "0.5"
    # Token axis max: 1.5 Mtok -> 2; the line's points sit at 0, 0.25 and 0.75 of the height.
    ys = [float(p.split(",")[1]) for p in chart.line.split()]
    base = chart.plot["y"] + h
    assert [(base - y) / h for y in ys] == pytest.approx([0.0, 0.25, 0.75], abs=1e-3)
    assert [t["label"] for t in chart.x_ticks] == ["00:00", "01:00", "02:00"]


def test_label_escapes_and_marks_band() -> None:
    cert = base_certificate()
    cert["scope"]["model"] = "<script>alert(1)</script>"
    cert["scope"]["site"] = 'dc"&<b>'
    html = label.render_label(cert)
    assert "<script" not in html  # the label has no script at all; the model name is text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "dc&#34;&amp;&lt;b&gt;" in html
    # The awarded grade is the headline letter and the one marked band of each scale row.
    assert 'id="grade-grade" style="background:#ffed00">D</div>' in html
    import re

    marked = re.findall(r'class="seg[a-z ]* on" style="background:#[0-9a-f]+">([A-G])<', html)
    assert marked == ["D", "C"]  # energy D, carbon C (the certificate's grading)
    assert '<span class="status status-development-key" id="status">development key</span>' in html
    assert "openssl pkeyutl -verify -pubin -inkey dc-t.chat.20260101T0000Z-20260101T0300Z.issuer.pem" in html
    assert "<svg" in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")

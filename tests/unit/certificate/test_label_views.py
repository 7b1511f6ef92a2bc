"""What the label and the analyst's page compute, on hand-made inputs with hand-computed answers."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
from test_reports_label import base_certificate

from greencert.certificate import label, reports

EDGES = [0.03, 0.06, 0.12, 0.25, 0.5, 1.0]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.015, 0.0),  # half of A's edge: the left end
        (0.001, 0.0),  # below: stays at the end
        (0.03, 1.0),  # A's upper edge = B's start
        (0.06 * math.sqrt(2), 2.5),  # halfway in ratio between 0.06 and 0.12: middle of C
        (0.25, 4.0),
        (2.0, 7.0),  # twice F's edge: the right end of G
        (50.0, 7.0),
    ],
)
def test_scale_position_is_logarithmic_inside_equal_bands(value: float, expected: float) -> None:
    assert label.scale_position(value, EDGES) == pytest.approx(expected)


def graded_certificate() -> dict:
    """Energy 0.3 kWh/Mtok (band E, edges 0.25-0.5) with interval [0.27, 0.33]: E at 95 %.
    Carbon 30 g (band C <= 36) with interval [25, 40]: the interval crosses 36, so D is awarded."""
    cert = base_certificate()
    cert["metrics"]["energy_per_million_tokens"]["interval95"] = [0.27, 0.33]
    cert["metrics"]["carbon_per_million_tokens"] = {
        "value": 30.0,
        "unit": "gCO2e/Mtok",
        "interval95": [25.0, 40.0],
    }
    cert["grade"] = "E"
    cert["grading"].update(
        overall="E",
        energy="E",
        carbon="D",
        confidence={
            "level": 0.95,
            "point_grades": {"energy": "E", "carbon": "C"},
            "top_grade_max_relative_halfwidth": 0.1,
        },
    )
    return cert


def test_scale_rows_put_value_and_interval_in_percent_of_the_scale() -> None:
    scale = label.build_scale(graded_certificate())
    energy, carbon = scale["rows"]
    # 0.3 in E (0.25..0.5): 4 + log(1.2)/log(2) band units of 7.
    assert energy["x"] == pytest.approx(100 * (4 + math.log(1.2) / math.log(2)) / 7, abs=1e-3)
    # Carbon 40 in D (36..75): 3 + log(40/36)/log(75/36).
    assert carbon["x_high"] == pytest.approx(100 * (3 + math.log(40 / 36) / math.log(75 / 36)) / 7, abs=1e-3)
    assert carbon["x_low"] < carbon["x"] < carbon["x_high"]
    assert (carbon["point_grade"], carbon["grade"]) == ("C", "D")
    assert [e["label"] for e in energy["edges"]] == ["0.03", "0.06", "0.12", "0.25", "0.5", "1"]


def test_why_this_grade_explains_the_band_edge_crossing() -> None:
    why = label.why_this_grade(graded_certificate())
    assert why[0] == "The grade is set by energy (E); carbon alone earns D."
    assert any(
        "The carbon figure, 30.0 g CO2e, lies in band C, but its 95 % range (25.0–40.0) crosses C's upper edge"
        " of 36"
        in w
        and "so D is awarded" in w
        for w in why
    )
    assert not any("energy figure" in w for w in why)  # energy's interval stays inside E


def test_grade_meaning_names_the_band_limits_and_size_class() -> None:
    text = label.grade_meaning(graded_certificate())
    # Grade E: upper edges 0.5 kWh and 150 g (index 4 of the certificate's band edges).
    assert text == (
        "E on a scale from A (best) to G: with 95 % confidence, this service used at most 0.5 kWh of "
        "electricity and caused at most 150 g CO2e per million output tokens (bands for models of up to "
        "20 B active parameters)."
    )
    cert = graded_certificate()
    cert["grade"] = "G"
    assert label.grade_meaning(cert).startswith(
        "G is the lowest grade from A (best) to G: this service used more than 1 kWh"
    )


@pytest.mark.parametrize(
    ("period", "text"),
    [
        (
            {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
            "Thursday 1 January 2026 (24 hours, UTC)",
        ),
        (
            {"start": "2026-01-01T00:00:00Z", "end": "2026-02-01T00:00:00Z"},
            "1 January 2026 to 31 January 2026 (31 days, UTC)",
        ),
        (
            {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T03:00:00Z"},
            "1 January 2026, 00:00 UTC to 1 January 2026, 03:00 UTC (3 hours)",
        ),
    ],
)
def test_human_periods(period: dict, text: str) -> None:
    assert label.human_period(period) == text


def test_numbers_as_people_read_them() -> None:
    assert [label._num(v) for v in (0.0905861, 30.7555, 5810.24, 188917275.0, 0.0, None)] == [
        "0.0906",
        "30.8",
        "5,810",
        "188,917,275",
        "0",
        "–",
    ]


def test_carbon_picture_takes_the_sci_score_from_the_sci_report() -> None:
    cert = base_certificate()
    cert["carbon"] = {
        "location_based": {"per_million_tokens": {"value": 120.0}, "grid_basis": "annual"},
        "market_based": {
            "per_million_tokens": {"value": 80.0},
            "cfe_hourly_share": 0.25,
            "annual_match_share": 0.5,
        },
        "embodied": {"per_million_tokens": {"value": 30.0}},
        "sci": {
            "coefficients": [
                {"symbol": "M", "name": "M", "value": 60.0, "unit": "gCO2e", "source": "inventory"}
            ],
            "components": [],
            "score": {"value": 150.0, "unit": "gCO2e/Mtok"},
        },
    }
    rows = {r["id"]: r for r in label.carbon_picture(cert)}
    assert rows["location"]["value"] == 120.0 and rows["market"]["value"] == 80.0
    assert rows["market"]["note"] == "24/7 carbon-free energy 25 %, annual match 50 %"
    assert rows["embodied"]["value"] == 30.0
    assert rows["sci"]["value"] == reports.sci_report(cert)["score"]["value"] == 150.0
    # Without carbon sections: the graded metric, no market figure, the operational SCI of the report.
    plain = {r["id"]: r for r in label.carbon_picture(base_certificate())}
    assert plain["location"]["value"] == 120.0 and plain["market"]["value"] is None
    assert plain["sci"]["value"] == pytest.approx(240.0 / 2.0)  # 240 g over 2 Mtok


def test_per_query_figures_only_with_request_counts() -> None:
    cert = base_certificate()
    assert label.per_query(cert)["available"] is False
    cert["metrics"]["energy_per_thousand_queries"] = {"value": 41.5, "unit": "Wh"}
    shown = label.per_query(cert)
    assert shown["available"] and shown["energy"]["value"] == 41.5


def test_label_links_and_qr_follow_the_public_registry_url() -> None:
    cert = base_certificate()
    cid = cert["certificate_id"]
    local = label.registry_links(cert, "")
    assert local["entry"] == f"../../index.html#{cid}" and local["qr_payload"] == f"greencert:{cid}"
    public = label.registry_links(cert, "https://registry.example/")
    assert public["entry"] == f"https://registry.example/index.html#{cid}"
    assert public["qr_payload"] == f"https://registry.example/dc-t/chat/{cid}.html"
    svg = label.qr_svg(public["qr_payload"])
    assert svg.startswith("<svg") and 'class="qr"' in svg
    html = label.render_label(cert, "https://registry.example")
    assert 'href="https://registry.example/index.html#dc-t.chat.20260101T0000Z-20260101T0300Z"' in html


def split_certificate(limited_by_metering: bool = True) -> dict:
    """Scheme-2026.3 shape (design16.md) on the analytic case of graded_certificate().

    Energy 0.3 kWh/Mtok lies in E (0.25-0.5), carbon 30 g in C (18-36): efficiency E (the worse).
    Limited by metering: the energy interval [0.2, 0.55] reaches F (0.5-1.0), so energy confirms F
    and the confirmed grade is F. Otherwise the energy interval [0.27, 0.33] stays in E and carbon's
    [25, 40] confirms D: the confirmed grade is still E (the worse of E and D)."""
    cert = graded_certificate()
    if limited_by_metering:
        cert["metrics"]["energy_per_million_tokens"]["interval95"] = [0.2, 0.55]
    confirmed_energy = "F" if limited_by_metering else "E"
    confirmed = "F" if limited_by_metering else "E"
    cert["grade"] = "E"
    cert["confirmed_grade"] = confirmed
    cert["measurement_class"] = "gpu_only"
    cert["grading"].update(
        overall="E",
        energy="E",
        carbon="C",
        efficiency={"overall": "E", "energy": "E", "carbon": "C"},
        confirmed={"overall": confirmed, "energy": confirmed_energy, "carbon": "D", "level": 0.95},
        measurement={
            "class": "gpu_only",
            "label": "GPU sensors only",
            "detail": "GPU power sensors only: host estimated; PUE declared",
        },
        limited_by="measurement" if limited_by_metering else "efficiency",
    )
    cert["grading"]["confidence"]["point_grades"] = {"energy": "E", "carbon": "C"}
    return cert


def test_old_certificates_keep_one_grade_card_and_the_inferred_measurement() -> None:
    cert = graded_certificate()
    assert [h["id"] for h in label.headline(cert)] == ["grade", "measurement"]
    assert label.confirmed_meaning(cert) is None and label.split_grades(cert) is None
    assert label.boundary_rows(cert) is None and label.water_view(cert) is None
    assert label.token_types(cert) == []
    html = label.render_label(cert)
    for absent in ("Efficiency grade", 'id="boundary"', 'id="water-figures"', 'id="limited-by"'):
        assert absent not in html
    assert 'id="grade-grade"' in html and "so D is awarded" in html


def test_headline_states_efficiency_confirmed_and_measurement_apart() -> None:
    cert = split_certificate()
    items = label.headline(cert)
    assert [(h["id"], h.get("grade")) for h in items] == [
        ("efficiency", "E"),
        ("confirmed", "F"),
        ("measurement", None),
    ]
    confirmed, measurement = items[1], items[2]
    # F's upper edges (index 5): 1 kWh and 300 g CO2e per million output tokens.
    assert confirmed["title"] == "Confirmed at 95 %"
    assert (
        confirmed["text"] == "With 95 % confidence, at most 1 kWh and 300 g CO2e per million output tokens."
    )
    assert confirmed["limited"].startswith("Limited by metering") and confirmed["limited"].endswith(
        "confirm E."
    )
    assert (measurement["title"], measurement["text"]) == ("Measurement class", "GPU sensors only")
    assert measurement["detail"] == "GPU power sensors only: host estimated; PUE declared"
    # E's upper edges (index 4): 0.5 kWh and 150 g, "as measured" (the efficiency grade is not a 95 % claim).
    assert label.grade_meaning(cert) == (
        "E on a scale from A (best) to G: as measured, this service used at most 0.5 kWh of electricity "
        "and caused at most 150 g CO2e per million output tokens (bands for models of up to 20 B active "
        "parameters)."
    )
    bare = split_certificate()
    del bare["grading"]["measurement"]  # only the top-level class: its words, no detail
    assert label.measurement_class(bare) == {"name": "GPU sensors only", "detail": "", "class": "gpu_only"}
    same = split_certificate(limited_by_metering=False)
    assert label.headline(same)[1]["limited"] == "Limited by efficiency: the measurement confirms E."
    # Three statements, three different texts.
    texts = {label.grade_meaning(cert), confirmed["text"] + confirmed["limited"], measurement["text"]}
    assert len(texts) == 3


def test_scale_dot_is_the_efficiency_band_and_the_outline_the_confirmed_band() -> None:
    scale = label.build_scale(split_certificate())
    energy, carbon = scale["rows"]
    assert (energy["point_grade"], energy["grade"]) == ("E", "F")
    assert (carbon["point_grade"], carbon["grade"]) == ("C", "D")
    assert scale["awarded_word"] == "confirmed"
    assert label.build_scale(graded_certificate())["awarded_word"] == "awarded"


def test_why_says_which_edge_holds_the_confirmed_grade_back() -> None:
    why = label.why_this_grade(split_certificate())
    assert why[0] == "The efficiency grade is set by energy (E); carbon alone earns C."
    assert any(
        "The energy figure, 0.300 kWh, lies in band E, but its 95 % range (0.200–0.550) crosses E's upper"
        " edge of 0.5"
        in w
        and "so F is confirmed" in w
        for w in why
    )
    assert any("so D is confirmed" in w for w in why)


def boundary_certificate() -> dict:
    """Components 0.12 + 0.06 + 0.03 + 0.09 = 0.30 kWh/Mtok (the graded figure of graded_certificate)."""
    cert = split_certificate()
    parts = [
        ("accelerator", 0.12, "measured"),
        ("host", 0.06, "estimated"),
        ("idle_capacity", 0.03, "estimated"),
        ("facility_overhead", 0.09, "declared"),
    ]
    cert["boundary"] = {
        "method": "Google 2025 (arXiv 2508.15734)",
        "components": [
            {
                "component": name,
                "energy": {"value": v * 2, "unit": "kWh"},
                "per_million_tokens": {"value": v, "unit": "kWh/Mtok"},
                "share": v / 0.30,
                "basis": basis,
                "source": f"source of {name}",
            }
            for name, v, basis in parts
        ],
        "total_per_million_tokens": {"value": 0.30, "unit": "kWh/Mtok"},
    }
    return cert


def test_boundary_rows_sum_to_the_graded_figure() -> None:
    view = label.boundary_rows(boundary_certificate())
    assert view is not None
    assert [(r["id"], r["basis"]) for r in view["rows"]] == [
        ("accelerator", "measured"),
        ("host", "estimated"),
        ("idle_capacity", "estimated"),
        ("facility_overhead", "declared"),
    ]
    assert [r["share"] for r in view["rows"]] == pytest.approx([0.4, 0.2, 0.1, 0.3])
    assert view["sum"] == pytest.approx(0.30) and view["total"] == pytest.approx(0.30)
    html = label.render_label(boundary_certificate())
    assert 'id="boundary-sum">0.300<' in html
    assert html.count('data-component="') == 4 and 'title="source of host"' in html


def test_water_per_query_and_token_types() -> None:
    cert = boundary_certificate()
    # 2 Mtok; WUE 0.5 L/kWh x 0.42 kWh IT (incl. idle) = 0.21 L -> 0.105 L/Mtok.
    cert["metrics"]["water_per_million_tokens"] = {"value": 0.105, "unit": "L/Mtok"}
    cert["water"] = {
        "wue": {
            "value": 0.5,
            "unit": "L/kWh",
            "basis": "declared",
            "source": "site",
            "standard": "ISO/IEC 30134-9",
        },
        "offsite_included": False,
        "per_million_tokens": {"value": 0.105, "unit": "L/Mtok"},
    }
    water = label.water_view(cert)
    assert water is not None and water["per_mtok"] == 0.105 and water["unit"] == "L"
    assert water["source"] == "WUE 0.5 L/kWh, declared, ISO/IEC 30134-9, site"
    assert water["offsite_text"] == "on-site water only, off-site (electricity) not included"
    # 0.6 kWh facility energy over 1,500 queries = 0.4 Wh per query = 400 Wh per 1,000 queries.
    cert["metrics"]["requests"] = {"value": 1500, "unit": "query"}
    cert["metrics"]["energy_per_thousand_queries"] = {"value": 400.0, "unit": "Wh/kquery"}
    cert["metrics"]["carbon_per_thousand_queries"] = {"value": 160.0, "unit": "gCO2e/kquery"}
    cert["metrics"]["water_per_thousand_queries"] = {"value": 0.14, "unit": "L/kquery"}
    pq = label.per_query(cert)
    assert (pq["energy"]["unit"], pq["carbon"]["unit"], pq["water"]["unit"]) == ("Wh", "g CO2e", "L")
    cert["load_regime"] = {
        "tokens": {
            "by_type": {
                "input": {"tokens": 6_000_000, "otel": "gen_ai.usage.input_tokens"},
                "output": {"tokens": 2_000_000, "otel": "gen_ai.usage.output_tokens"},
                "cached_input": {"tokens": 1_500_000, "share_of_input": 0.25, "otel": "x"},
                "note": "cached input tokens are part of the input tokens",
            }
        }
    }
    assert [(t["id"], t["value"]) for t in label.token_types(cert)] == [
        ("input", 6e6),
        ("cached_input", 1.5e6),  # a part of the input, shown under it
        ("output", 2e6),
    ]
    html = label.render_label(cert)
    assert 'id="per-query">400 Wh<' in html and 'id="per-query-water">0.140 L<' in html
    assert 'id="water-per-mtok">0.105 L<' in html and 'data-token-type="cached_input"' in html
    assert "of which cached (25 %)</th>" in html  # 1.5 M of 6 M input tokens came from the prompt cache


# --- the analyst's page -------------------------------------------------------------------------


def row(
    site: str, deployment: str, day: str, grade: str, status: str, kwh: float, mtok: float, g: float
) -> dict:
    return {
        "certificate_id": f"{site}.{deployment}.{day}",
        "site": site,
        "deployment": deployment,
        "model": "m",
        "grade": grade,
        "status": status,
        "period": {"start": f"{day}T00:00:00Z", "end": f"{day}T23:00:00Z"},
        "energy_kwh_per_mtok": kwh / mtok,
        "carbon_gco2e_per_mtok": g / mtok,
        "figures": {
            "facility_kwh": kwh,
            "output_tokens": mtok * 1e6,
            "carbon_g": g,
            "energy_interval": [0.9 * kwh / mtok, 1.1 * kwh / mtok],
            "carbon_interval": None,
        },
    }


ROWS = [
    row("s1", "a", "2026-01-01", "C", "superseded", 10.0, 100.0, 3000.0),
    row("s1", "a", "2026-01-02", "D", "valid", 20.0, 100.0, 5000.0),
    row("s1", "b", "2026-01-01", "B", "revoked", 99.0, 1.0, 1.0),
    row("s2", "c", "2026-01-02", "D", "unverified", 99.0, 1.0, 1.0),
]


def test_fleet_totals_count_each_period_once_and_leave_out_revoked_and_unverified() -> None:
    from greencert.webui import fleet_summary

    s = fleet_summary(ROWS)
    assert s["certificates"] == 2 and s["left_out"] == 2
    assert s["facility_kwh"] == pytest.approx(30.0) and s["output_mtok"] == pytest.approx(200.0)
    assert s["kwh_per_mtok"] == pytest.approx(0.15) and s["g_per_mtok"] == pytest.approx(40.0)
    assert s["carbon_kg"] == pytest.approx(8.0)
    assert {g["grade"]: g["count"] for g in s["grades"]} == {
        "A": 0,
        "B": 0,
        "C": 1,
        "D": 1,
        "E": 0,
        "F": 0,
        "G": 0,
    }


def test_trend_chart_geometry() -> None:
    from greencert.webui import TREND_B, TREND_H, TREND_L, TREND_R, TREND_T, TREND_W, deployment_trends

    trends = deployment_trends(ROWS)
    assert [(t["site"], t["deployment"], t["count"]) for t in trends] == [("s1", "a", 2), ("s1", "b", 1)]
    chart = trends[0]["energy"]
    # Values 0.1 and 0.2 kWh/Mtok, highs 0.11 and 0.22 -> axis top nice(0.22) = 0.25.
    plot_h = TREND_H - TREND_T - TREND_B
    base = TREND_T + plot_h
    assert [m["y"] for m in chart["marks"]] == pytest.approx(
        [base - plot_h * 0.4, base - plot_h * 0.8], abs=0.01
    )
    assert chart["marks"][1]["y_high"] == pytest.approx(base - plot_h * 0.88, abs=0.01)
    assert [m["x"] for m in chart["marks"]] == [TREND_L, TREND_W - TREND_R]  # first and last day at the ends
    assert trends[0]["carbon"]["marks"][0]["y_low"] is None  # no interval: no whisker


def test_select_rows_filters_by_model_grade_status_and_dates() -> None:
    from greencert.webui import select_rows

    rows = copy.deepcopy(ROWS)
    rows[1]["development_key"] = True
    assert select_rows(rows, grade="D")[0] == 2
    assert [r["deployment"] for r in select_rows(rows, status="development key")[1]] == ["a"]
    assert select_rows(rows, status="valid")[0] == 0  # a development-key certificate is not "valid"
    assert select_rows(rows, since="2026-01-02")[0] == 2 and select_rows(rows, until="2026-01-01")[0] == 2
    assert select_rows(rows, model="other")[0] == 0


def test_a_failed_validation_records_its_rejection_with_its_data_docs_page(tmp_path: Path) -> None:
    from corpus.bad_bundles import CASES
    from greencert import tasks
    from greencert.errors import ValidationFailed
    from greencert.webui import load_rejections

    work = tmp_path / "runs" / "chat-8b" / "20260101T0000Z_20260102T0000Z"
    work.mkdir(parents=True)
    bundle = CASES["power_negative"].write(tmp_path / "bundle")
    with pytest.raises(ValidationFailed):
        tasks.validate(tasks.DEFAULT_CONFIG, str(bundle), str(work))
    [record] = load_rejections(tmp_path)
    assert record["deployment"] == "chat-8b" and record["stage"] == "validate"
    assert record["period"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    assert "value is negative" in record["message"] and "gpu0" in record["message"]
    page = work / record["data_docs"]
    assert page.is_file() and "/validations/power_profile/" in page.as_posix()
    text = page.read_text()
    assert "n_negative" in text and "gpu0" in text  # the failed expectation and the offending row
    failed = json.loads((work / "validation.failed.json").read_bytes())
    assert [s["success"] for s in failed["suites"]][0] is False


def test_an_extract_failure_is_recorded_as_a_rejection_with_its_reason(tmp_path: Path) -> None:
    """A deployment whose source has no data for the period has no certificate: the page says why."""
    import datetime as dt

    import yaml

    from greencert import tasks
    from greencert.errors import ConfigError
    from greencert.webui import load_rejections

    missing = tmp_path / "nowhere" / "chat-8b"
    config = tmp_path / "fleet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registry": str(tmp_path / "registry"),
                "work_dir": str(tmp_path / "work"),
                "deployments": [
                    {"deployment": "chat-8b", "source": {"kind": "bundle", "path": str(missing)}}
                ],
            }
        )
    )
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(ConfigError):
        tasks.extract(str(config), "chat-8b", start, start + dt.timedelta(days=1))
    [record] = load_rejections(tmp_path / "work")
    assert record["deployment"] == "chat-8b" and record["stage"] == "extract"
    assert record["period"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    assert str(missing) in record["message"] and "does not exist" in record["message"]
    assert record["data_docs"] is None  # nothing was validated


def test_grade_text_and_measurement_text_of_rows() -> None:
    from greencert.certificate import status

    assert status.grade_text({"grade": "B", "confirmed_grade": "C"}) == "B (confirmed C)"
    assert status.grade_text({"grade": "B", "confirmed_grade": "B"}) == "B"
    assert status.grade_text({"grade": "D"}) == "D"  # a certificate before 2026.3
    assert status.measurement_text({"measurement_class": "node"}) == "node meters"
    assert status.measurement_text({"measurement_class": None}) == "-"


def test_select_rows_filters_by_measurement_class() -> None:
    from greencert.webui import select_rows

    rows = copy.deepcopy(ROWS)
    rows[0]["measurement_class"] = "node"
    rows[1]["measurement_class"] = "gpu_only"
    assert [r["certificate_id"] for r in select_rows(rows, measurement="node")[1]] == ["s1.a.2026-01-01"]
    assert select_rows(rows, measurement="facility")[0] == 0
    assert select_rows(rows)[0] == 4  # no filter: the older certificates without a class stay in

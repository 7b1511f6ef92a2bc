"""Issue 16 in the listings: the registry rows, the registry index page, the Airflow page and the CLI
show the efficiency grade with the grade confirmed at 95 % ("B (confirmed C)") and the measurement
class, from signed certificates in a real (temporary) registry; older certificates show as before."""

from __future__ import annotations

import datetime as dt
import json
import re
import types
from pathlib import Path

import pytest

from trust_helpers import new_registry, publish_all, put

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def cert(deployment: str, grade: str, confirmed: str | None, measurement: str | None) -> dict:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cid = f"dc-a.{deployment}.20260101T0000Z-20260102T0000Z"
    out = {
        "certificate_format": "greencert-certificate/1",
        "certificate_id": cid,
        "scope": {"site": "dc-a", "deployment": deployment, "model": "m"},
        "period": {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end": "2026-01-02T00:00:00Z"},
        "issued_at": "2026-01-02T00:00:00Z",
        "valid_until": "2026-07-01T00:00:00Z",
        "grade": grade,
        "grading": {"overall": grade, "energy": grade, "carbon": grade, "size_class": "<=20B"},
        "metrics": {
            "energy_per_million_tokens": {"value": 0.1, "unit": "kWh/Mtok"},
            "carbon_per_million_tokens": {"value": 40.0, "unit": "gCO2e/Mtok"},
        },
    }
    if confirmed is not None:
        out["confirmed_grade"] = confirmed
    if measurement is not None:
        out["measurement_class"] = measurement
    return out


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("GREENCERT_TRUST_STORE", raising=False)
    reg = new_registry(tmp_path / "registry")
    put(reg, cert("metered-badly", "B", "C", "gpu_only"))  # limited by metering
    put(reg, cert("metered-well", "B", "B", "node"))  # confirmed = efficiency
    put(reg, cert("older", "D", None, None))  # a 2026.2 certificate: one letter, no class
    publish_all(reg, NOW)
    return reg


def test_rows_carry_the_confirmed_grade_and_measurement_class(registry: Path) -> None:
    from greencert.certificate.registry import list_certificates

    rows = {r["deployment"]: r for r in list_certificates(registry, NOW)}
    assert {k: (r["grade"], r["confirmed_grade"], r["measurement_class"]) for k, r in rows.items()} == {
        "metered-badly": ("B", "C", "gpu_only"),
        "metered-well": ("B", "B", "node"),
        "older": ("D", None, None),
    }
    index = json.loads((registry / "index.json").read_bytes())
    assert {r["deployment"]: r["confirmed_grade"] for r in index["certificates"]} == {
        "metered-badly": "C",
        "metered-well": "B",
        "older": None,
    }


def grade_cells(html: str) -> dict[str, str]:
    """deployment -> the text of its grade cell (tags removed, whitespace collapsed)."""
    out = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S):
        dep = re.search(r'data-label="deployment"[^>]*>([^<]+)<', row)
        cell = re.search(r'<td data-label="grade"[^>]*>(.*?)</td>', row, re.S)
        if dep and cell:
            out[dep.group(1)] = " ".join(re.sub(r"<[^>]+>", " ", cell.group(1)).split())
    return out


def test_registry_index_page_shows_confirmed_grade_and_metering(registry: Path) -> None:
    html = (registry / "index.html").read_text()
    assert grade_cells(html) == {
        "metered-badly": "B (confirmed C) GPU sensors only",
        "metered-well": "B node meters",
        "older": "D",
    }


def test_airflow_page_grade_and_measurement_columns_and_filter(
    registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from greencert import webui

    monkeypatch.setenv("GREENCERT_REGISTRY", str(registry))
    monkeypatch.setattr(webui, "issuing_runs", lambda ids: {})
    monkeypatch.setattr(webui, "work_root", lambda: None)
    request = types.SimpleNamespace(scope={"root_path": "/greencert"}, headers={}, url=None)
    monkeypatch.setattr(webui, "_roots", lambda request: ("/greencert", ""))
    data = webui._page_data(request, None, None, None, 0, 50, analysis=True)
    assert data["measurement_classes"] == ["node", "gpu_only"]  # best first, only those present
    html = webui.render_page(data, "/greencert")
    assert grade_cells(html) == {"metered-badly": "B (confirmed C)", "metered-well": "B", "older": "D"}
    measured = dict(
        re.findall(
            r'data-label="deployment"[^>]*>([^<]+)<.*?data-label="measurement"[^>]*>([^<]*)<', html, re.S
        )
    )
    assert measured == {"metered-badly": "GPU sensors only", "metered-well": "node meters", "older": "-"}
    assert '<option value="gpu_only">GPU sensors only</option>' in html
    only = webui._page_data(request, None, None, None, 0, 50, measurement="gpu_only")
    assert [r["deployment"] for r in only["certificates"]] == ["metered-badly"]


def test_cli_summary_and_registry_list_show_both_grades(
    registry: Path, capsys: pytest.CaptureFixture
) -> None:
    from greencert import cli

    assert cli.main(["summary", str(registry), "--at", "2026-03-01T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith("dc-a ")}
    assert "B (confirmed C)" in lines["metered-badly"] and "GPU sensors only" in lines["metered-badly"]
    assert "(confirmed" not in lines["metered-well"] and "node meters" in lines["metered-well"]
    assert "(confirmed" not in lines["older"]
    assert cli.main(["registry", "list", str(registry), "--at", "2026-03-01T00:00:00Z"]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"dc-a\.metered-badly\.\S+\s+B \(confirmed C\)\s+<=20B\s+GPU sensors only\s", listed), (
        listed
    )

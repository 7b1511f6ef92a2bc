"""The certificates page's data layer: which rows, in which order, which page; index vs files; escaping."""

from __future__ import annotations

import datetime as dt
import json
import types
from pathlib import Path

import pytest

from greencert.webui import _roots, _when, load_rows, render_page, select_rows
from trust_helpers import new_registry, publish_all, put

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def write_cert(
    registry: Path, site: str, deployment: str, day: int, grade: str = "B", model: str = "m"
) -> Path:
    start = dt.datetime(2026, 1, day, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    fmt = "%Y%m%dT%H%MZ"
    cid = f"{site}.{deployment}.{start:{fmt}}-{end:{fmt}}"
    cert = {
        "certificate_format": "greencert-certificate/1",
        "certificate_id": cid,
        "scope": {"site": site, "deployment": deployment, "model": model},
        "period": {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"},
        "issued_at": f"{end:%Y-%m-%dT%H:%M:%SZ}",
        "valid_until": "2026-07-01T00:00:00Z",
        "grade": grade,
        "metrics": {
            "energy_per_million_tokens": {"value": 0.1 * day, "unit": "kWh/Mtok"},
            "carbon_per_million_tokens": {"value": 40.0 * day, "unit": "gCO2e/Mtok"},
        },
    }
    return put(registry, cert)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("GREENCERT_TRUST_STORE", raising=False)
    reg = new_registry(tmp_path / "registry")
    for day in (1, 2, 3):
        write_cert(reg, "dc-a", "chat-8b", day)
        write_cert(reg, "dc-b", "code-32b", day, grade="D")
    write_cert(reg, "dc-a", "assist-14b", 2, grade="A")
    publish_all(reg, NOW)
    return reg


def test_rows_come_from_the_files_with_statuses(registry: Path) -> None:
    rows, source = load_rows(registry, NOW)
    assert source == "verified"
    assert len(rows) == 7
    # Per scope the newest period is valid, older ones superseded (nothing expired before July).
    status = {(r["deployment"], r["period"]["start"][:10]): r["status"] for r in rows}
    assert status[("chat-8b", "2026-01-03")] == "valid"
    assert status[("chat-8b", "2026-01-01")] == "superseded"
    assert status[("assist-14b", "2026-01-02")] == "valid"


def test_filters_order_and_paging_match_a_reference(registry: Path) -> None:
    rows, _ = load_rows(registry, NOW)
    # Reference: newest period end first, then site, deployment; written independently here.
    expected = [
        ("dc-a", "chat-8b", 3),
        ("dc-b", "code-32b", 3),
        ("dc-a", "assist-14b", 2),
        ("dc-a", "chat-8b", 2),
        ("dc-b", "code-32b", 2),
        ("dc-a", "chat-8b", 1),
        ("dc-b", "code-32b", 1),
    ]

    def key(r):
        return (r["site"], r["deployment"], int(r["period"]["start"][8:10]))

    total, page = select_rows(rows, offset=0, limit=100)
    assert total == 7 and [key(r) for r in page] == expected
    total, page = select_rows(rows, offset=2, limit=3)
    assert total == 7 and [key(r) for r in page] == expected[2:5]
    total, page = select_rows(rows, offset=6, limit=3)
    assert [key(r) for r in page] == expected[6:]
    total, page = select_rows(rows, site="dc-a", offset=0, limit=100)
    assert total == 4 and all(r["site"] == "dc-a" for r in page)
    total, page = select_rows(rows, site="dc-a", deployment="chat-8b", status="superseded")
    assert total == 2 and [key(r) for r in page] == [("dc-a", "chat-8b", 2), ("dc-a", "chat-8b", 1)]
    assert select_rows(rows, deployment="nope") == (0, [])


def test_rows_never_come_from_the_index_and_are_checked_again_when_the_registry_changes(
    registry: Path,
) -> None:
    """Attack: a registry writer edits index.json to show a revoked or forged certificate as valid.
    The page takes no status from index.json; a file dropped in after the last check is unverified."""
    from greencert.certificate.registry import INDEX_JSON

    index_path = registry / INDEX_JSON
    index = json.loads(index_path.read_bytes())
    for row in index["certificates"]:
        row["status"], row["grade"] = "valid", "A"
    index_path.write_text(json.dumps(index))
    rows, source = load_rows(registry, NOW)
    assert source == "verified" and len(rows) == 7
    assert sum(r["status"] == "superseded" for r in rows) == 4  # not what the edited index says
    assert {r["grade"] for r in rows} == {"A", "B", "D"}  # grades from the certificates: assist-14b is A
    # Expiry is re-evaluated at read time: by August every certificate has expired.
    rows, _ = load_rows(registry, dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    assert {r["status"] for r in rows} == {"expired"}
    dropped = write_cert(registry, "dc-c", "new-1b", 4)
    dropped.with_name(dropped.name + ".sig").unlink()
    dropped.write_bytes(dropped.read_bytes().replace(b'"grade":"B"', b'"grade":"A"'))
    rows, _ = load_rows(registry, NOW)
    assert len(rows) == 8
    assert [r["status"] for r in rows if r["site"] == "dc-c"] == ["unverified"]


def test_missing_registry_lists_nothing(tmp_path: Path) -> None:
    assert load_rows(tmp_path / "absent", NOW) == ([], "verified")


def test_period_display() -> None:
    assert _when("2026-01-01T00:00:00Z") == "2026-01-01"
    assert _when("2026-01-01T06:30:00Z") == "2026-01-01 06:30"


def test_roots_follow_the_mount_and_base_url() -> None:
    def request(root_path: str):
        return types.SimpleNamespace(scope={"root_path": root_path})

    assert _roots(request("/greencert")) == ("/greencert", "")
    assert _roots(request("/airflow/greencert")) == ("/airflow/greencert", "/airflow")


def test_page_escapes_data_and_links_label_and_run(registry: Path) -> None:
    write_cert(registry, "dc-x", "evil", 5, model="<script>alert(1)</script>")
    publish_all(registry, NOW)
    rows, source = load_rows(registry, NOW)
    total, page = select_rows(rows, limit=2)
    items = []
    for r in page:
        run = {"dag_id": "green_certification", "run_id": "manual__x+1", "published_at": "t"}
        items.append(
            {
                **r,
                "issued_by": run,
                "links": {
                    "label": f"/greencert/files/{r['paths']['json']}",
                    "json": f"/greencert/files/{r['paths']['json']}",
                    "pdf": None,
                    "dag_run": "/dags/green_certification/runs/manual__x%2B1",
                },
            }
        )
    data = {
        "registry": str(registry),
        "source": source,
        "total": total,
        "offset": 0,
        "limit": 2,
        "filters": {"site": None, "deployment": None, "status": None},
        "sites": sorted({r["site"] for r in rows}),
        "deployments": sorted({r["deployment"] for r in rows}),
        "certificates": items,
    }
    html = render_page(data, "/greencert")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="/dags/green_certification/runs/manual__x%2B1"' in html
    assert "1&ndash;2 of 8" in html
    assert 'id="next" href="/greencert/?offset=2&amp;limit=2"' in html
    assert 'id="prev"' not in html

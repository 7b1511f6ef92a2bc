"""The registry's index.html in headless Chromium at desktop and phone widths: a certificate that does not
verify is shown as unverified (its grade only a claim), and the status stays in view on a phone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from airflow_cluster import REPO
from greencert.certificate.status import display_status
from trust_helpers import new_registry, publish_all, put

pytestmark = pytest.mark.integration

AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def cert_doc(deployment: str, grade: str) -> dict:
    cid = f"dc-a.{deployment}.20260101T0000Z-20260102T0000Z"
    return {
        "certificate_format": "greencert-certificate/1",
        "certificate_id": cid,
        "scope": {"site": "dc-a", "deployment": deployment, "model": "meta-llama/Llama-3.1-8B-Instruct"},
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        "issued_at": "2026-01-02T00:00:00Z",
        "valid_until": "2026-07-02T00:00:00Z",
        "grade": grade,
        "metrics": {
            "energy_per_million_tokens": {"value": 0.09, "unit": "kWh/Mtok"},
            "carbon_per_million_tokens": {"value": 30.0, "unit": "gCO2e/Mtok"},
        },
        "scheme": {"id": "greencert-inference", "version": "2026.2"},
    }


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    root = new_registry(tmp_path / "registry")
    put(root, cert_doc("chat-8b", "D"))
    publish_all(root, AT)
    put(root, cert_doc("dropped-in", "A"), key=False)  # a registry writer's file, unsigned
    publish_all(root, AT)
    return root


@pytest.mark.parametrize("width", [1280, 390])
def test_index_page_shows_checked_statuses_at_desktop_and_phone_width(registry: Path, width: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.set_window_size(width, 900)
        driver.get((registry / "index.html").as_uri())
        viewport = driver.execute_script("return document.documentElement.clientWidth")
        rows = driver.find_elements(By.CSS_SELECTOR, "#certs tbody tr")
        assert len(rows) == 2
        index = json.loads((registry / "index.json").read_bytes())
        expected = {r["deployment"]: r for r in index["certificates"]}
        assert expected["dropped-in"]["status"] == "unverified" and expected["chat-8b"]["status"] == "valid"
        for row in rows:
            cells = row.find_elements(By.TAG_NAME, "td")
            deployment = cells[1].text.split(": ")[-1]
            status, grade = cells[7], cells[4]
            # Every status is on screen, not scrolled out to the right.
            assert status.is_displayed()
            assert status.rect["x"] + status.rect["width"] <= viewport + 1, (width, status.rect, viewport)
            if deployment == "dropped-in":
                assert "unverified" in status.text and "not listed" in status.text
                assert grade.text.endswith("A?")  # the claimed grade, marked as a claim
            else:
                # The displayed status (a development-key certificate is shown as such, never as "valid").
                shown = display_status(expected[deployment])
                assert status.text.split(": ")[-1].startswith(shown)
                assert grade.text.endswith("D")
        shot = REPO / "build" / "screenshots" / f"registry-index-{width}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 5_000
    finally:
        driver.quit()

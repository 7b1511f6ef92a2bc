"""The label as a person sees it: a real certificate's label in headless Chromium at desktop (1280 px)
and phone (390 px) width, and its PDF (printed by the project's own Chromium path) through poppler.

Checked on the rendered picture, not the HTML source: the key elements are displayed and inside the
viewport, nothing overflows horizontally, the shown figures are the certificate's (parsed from the
page text and compared with the certificate's values), the SCI figure is the SCI report's, and the
PDF is one A4 page whose text carries the same figures. Screenshots land in build/screenshots/.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from airflow_cluster import REPO

pytestmark = pytest.mark.integration

SHOTS = REPO / "build" / "screenshots"
DAY = "2026-01-01"  # the label does not depend on today's date: no verification happens here
KEY_ELEMENTS = (
    "meaning",
    "figure-energy",
    "figure-carbon",
    "energy-per-mtok",
    "per-query",
    "carbon-location",
    "carbon-market",
    "carbon-embodied",
    "carbon-sci",
    "status",
    "qr",
    "registry-link",
    "why",
    "period",
    "valid-until",
    "data-docs-link",
)


def run(*args: str, cwd: Path | None = None, env: dict | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=cwd, env=env, check=False)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc.stdout


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One certificate of the sample fleet's chat-8b, certified by the CLI with its PDF label."""
    import os

    root = tmp_path_factory.mktemp("label")
    env = {
        **os.environ,
        "GREENCERT_HOME": str(root / "home"),
        "PYTHONPATH": str(REPO / "plugins"),
        "GREENCERT_LABEL_PDF": "1",  # the PDF is required here (conftest turns it off elsewhere)
    }
    env.pop("GREENCERT_SIGNING_KEY", None)
    greencert = str(REPO / ".venv" / "bin" / "greencert")
    run(greencert, "simulate", "--out", str(root / "bundles"), "--date", DAY, env=env)
    run(
        greencert,
        "certify",
        str(root / "bundles" / "chat-8b" / DAY),
        "--out",
        str(root / "registry"),
        env=env,
    )
    [cert_path] = [
        p
        for p in (root / "registry" / "dc-east-1" / "chat-8b").glob("*.json")
        if not p.name.endswith((".validation.json", ".log.json"))
    ]
    cert = json.loads(cert_path.read_bytes())
    sci = json.loads((cert_path.parent / f"{cert['certificate_id']}.reports" / "sci.json").read_bytes())
    return {"cert": cert, "path": cert_path, "sci": sci, "root": root}


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def number(text: str) -> float:
    """The first number of a shown text (``30.8 g CO2e`` -> 30.8, ``5,810`` -> 5810)."""
    found = re.search(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", text)
    assert found, text
    return float(found.group(0).replace(",", ""))


def expected_figures(cert: dict, sci: dict) -> dict[str, float]:
    """What each element must show, read from the certificate and the SCI report (not from the label)."""
    m = cert["metrics"]
    return {
        "figure-energy": m["energy_per_million_tokens"]["value"],
        "energy-per-mtok": m["energy_per_million_tokens"]["value"],
        "figure-carbon": m["carbon_per_million_tokens"]["value"],
        "carbon-location": cert["carbon"]["location_based"]["per_million_tokens"]["value"],
        "carbon-market": cert["carbon"]["market_based"]["per_million_tokens"]["value"],
        "carbon-embodied": cert["carbon"]["embodied"]["per_million_tokens"]["value"],
        "carbon-sci": sci["score"]["value"],
    }


@pytest.mark.parametrize("width", [1280, 390])
def test_label_picture_at_desktop_and_phone_width(issued: dict, browser, width: int) -> None:
    from selenium.webdriver.common.by import By

    cert, sci = issued["cert"], issued["sci"]
    browser.set_window_size(width, 1000)
    browser.get(issued["path"].with_suffix(".html").as_uri())
    viewport = browser.execute_script("return document.documentElement.clientWidth")
    assert viewport <= width
    # Nothing wider than the screen: no horizontal scrolling, on a phone either.
    scroll = browser.execute_script("return document.documentElement.scrollWidth")
    assert scroll <= viewport, (width, scroll, viewport)
    split = "confirmed" in cert["grading"]  # scheme 2026.3+: efficiency and confirmed grades apart
    headline_id = "grade-efficiency" if split else "grade-grade"
    for element_id in (*KEY_ELEMENTS, headline_id):
        el = browser.find_element(By.ID, element_id)
        assert el.is_displayed(), element_id
        r = el.rect
        assert r["width"] > 0 and r["height"] > 0, (element_id, r)
        assert r["x"] >= 0 and r["x"] + r["width"] <= viewport + 0.5, (width, element_id, r, viewport)

    # The headline letter is the certificate's grade, large enough to read at a glance.
    letter = browser.find_element(By.ID, headline_id)
    assert letter.text == cert["grade"]
    assert float(letter.value_of_css_property("font-size").removesuffix("px")) >= 36
    meaning = browser.find_element(By.ID, "meaning").text
    assert meaning.startswith(f"{cert['grade']} on a scale from A (best) to G")
    idx = "ABCDEFG".index(cert["grade"])
    e_edge = cert["grading"]["energy_band_edges"]["upper_edges"][idx]
    c_edge = cert["grading"]["carbon_band_edges"]["upper_edges"][idx]
    assert f"at most {e_edge:g} kWh" in meaning and f"at most {c_edge:g} g CO2e" in meaning

    # Every shown figure is the certificate's (3 significant digits: within 0.5 %).
    for element_id, value in expected_figures(cert, sci).items():
        shown = browser.find_element(By.ID, element_id).text
        assert number(shown) == pytest.approx(value, rel=5e-3), (element_id, shown, value)

    # The interval is drawn on the scale: the dot inside its bar, the bar inside the track.
    for what, key in (("energy", "energy_per_million_tokens"), ("carbon", "carbon_per_million_tokens")):
        row = browser.find_element(By.CSS_SELECTOR, f".scale-row[data-figure={what}]")
        track = row.find_element(By.CSS_SELECTOR, ".track").rect
        bar = row.find_element(By.CSS_SELECTOR, ".ival").rect
        dot = row.find_element(By.CSS_SELECTOR, ".pt").rect
        assert track["x"] - 1 <= bar["x"] and bar["x"] + bar["width"] <= track["x"] + track["width"] + 1
        assert bar["x"] - 1 <= dot["x"] + dot["width"] / 2 <= bar["x"] + bar["width"] + 1
        marked = row.find_elements(By.CSS_SELECTOR, ".seg.on")
        awarded = cert["grading"]["confirmed"][what] if split else cert["grading"][what]
        assert [s.text for s in marked] == [awarded]
        low, high = cert["metrics"][key]["interval95"]
        assert low <= cert["metrics"][key]["value"] <= high

    # Why: when the interval pushed a figure a band down, the label says so in words.
    why = browser.find_element(By.ID, "why").text
    point = cert["grading"]["confidence"]["point_grades"]
    for figure in ("energy", "carbon"):
        awarded = cert["grading"]["confirmed"][figure] if split else cert["grading"][figure]
        if point[figure] != awarded:
            verb = "confirmed" if split else "awarded"
            assert f"The {figure} figure" in why and "crosses" in why and f"{awarded} is {verb}" in why
    per_query = browser.find_element(By.ID, "per-query").text
    if "energy_per_thousand_queries" in cert["metrics"]:
        assert number(per_query) == pytest.approx(
            cert["metrics"]["energy_per_thousand_queries"]["value"], rel=5e-3
        )
    else:
        assert "not available" in per_query  # no request counter in this bundle
    assert browser.find_element(By.ID, "status").text == "development key"
    assert "1 January 2026" in browser.find_element(By.ID, "period").text
    assert browser.find_element(By.ID, "valid-until").text == "2 July 2026"
    link = browser.find_element(By.ID, "registry-link").get_attribute("href")
    assert link.endswith(f"/index.html#{cert['certificate_id']}")

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, height + 40)
    shot = SHOTS / f"label-{width}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def pdf_text(pdf: Path) -> tuple[int, str]:
    info = subprocess.run(
        ["pdfinfo", str(pdf)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    size = re.search(r"^Page size:\s+([\d.]+) x ([\d.]+) pts", info, re.M)
    assert size and abs(float(size.group(1)) - 595.3) < 2 and abs(float(size.group(2)) - 841.9) < 2, (
        info
    )  # A4
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return pages, text


def test_pdf_label_is_one_a4_page_with_the_same_figures(issued: dict, browser) -> None:
    from selenium.webdriver.common.by import By

    cert, sci = issued["cert"], issued["sci"]
    pdf = issued["path"].with_suffix(".pdf")
    assert pdf.is_file(), "certify printed no PDF label although Chromium is installed"
    pages, text = pdf_text(pdf)
    assert pages == 1
    flat = " ".join(text.split())
    # The same strings the HTML shows, element by element.
    browser.set_window_size(1280, 1000)
    browser.get(issued["path"].with_suffix(".html").as_uri())
    for element_id in (
        "figure-energy",
        "figure-carbon",
        "carbon-sci",
        "carbon-market",
        "carbon-embodied",
        "status",
    ):
        shown = " ".join(browser.find_element(By.ID, element_id).text.split()[:3])
        assert shown in flat, (element_id, shown)
    assert cert["certificate_id"] in flat
    assert f"{sci['score']['value']:.3g}" in flat
    shot = SHOTS / "label-pdf.png"
    SHOTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-r", "80", "-png", "-singlefile", str(pdf), str(shot.with_suffix(""))],
        check=True,
        timeout=60,
    )
    assert shot.stat().st_size > 20_000


def test_pdf_stays_one_page_with_per_query_figures_and_long_names(issued: dict, tmp_path: Path) -> None:
    """The fullest label (request counts in the evidence, a long model name) still prints on one page."""
    from greencert.certificate.label import render_label, render_pdf

    cert = copy.deepcopy(issued["cert"])
    cert["scope"]["model"] = (
        "organisation-with-a-long-name/Llama-3.1-70B-Instruct-FP8-dynamic-long-context-128k"
    )
    energy_kwh = cert["metrics"]["facility_energy"]["value"]
    queries = 412_345
    cert["metrics"]["requests"] = {"value": queries, "unit": "request"}
    # 1,000 queries' share of the facility energy, in Wh: independent of the label's code.
    cert["metrics"]["energy_per_thousand_queries"] = {
        "value": energy_kwh * 1000 / queries * 1000,
        "unit": "Wh",
    }
    cert["metrics"]["carbon_per_thousand_queries"] = {
        "value": cert["metrics"]["operational_carbon"]["value"] / queries * 1000,
        "unit": "g CO2e",
    }
    html = render_label(cert)
    pdf = tmp_path / "full.pdf"
    pdf.write_bytes(render_pdf(html))
    pages, text = pdf_text(pdf)
    assert pages == 1
    flat = " ".join(text.split())
    expected_wh = energy_kwh * 1e6 / queries
    assert f"{expected_wh:.3g} Wh" in flat, flat[:3000]
    assert shutil.which("pdftotext")


# --- issue 16: the label of a scheme-2026.3 certificate -------------------------------------------

ISSUE16_ELEMENTS = (
    "grade-efficiency",
    "grade-confirmed",
    "statement-measurement",
    "meaning",
    "confirmed-meaning",
    "limited-by",
    "boundary",
    "boundary-sum",
    "per-query",
)


def issue16_elements(cert: dict) -> tuple[str, ...]:
    """The ids the label must show for this certificate (water and per-query rows only when stated)."""
    m = cert["metrics"]
    extra = []
    if "water_per_million_tokens" in m:
        extra += ["water-per-mtok", "water-scope"]
    if "energy_per_thousand_queries" in m:
        extra += ["per-query-carbon", "requests"]
    if "water_per_thousand_queries" in m:
        extra.append("per-query-water")
    return (*ISSUE16_ELEMENTS, *extra)


@pytest.fixture(scope="module", params=["added-keys", "scheme-2026.3"])
def issue16(request: pytest.FixtureRequest, issued: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A scheme-2026.3 label two ways: the CLI-certified certificate with every issue-16 key added
    (tests/label16.py: water and token types too, limited by metering by construction), and the same
    bundle certified by the CLI under greencert-2026.3.yaml (the real keys, whatever they grade)."""
    import os

    from greencert.certificate.label import render_label
    from label16 import with_issue16_keys

    if request.param == "added-keys":
        cert = with_issue16_keys(issued["cert"])
        page = tmp_path_factory.mktemp("label16") / f"{cert['certificate_id']}.html"
        page.write_text(render_label(cert), encoding="utf-8")
        return {"cert": cert, "page": page, "kind": request.param, "pdf": None}
    root = issued["root"]
    env = {**os.environ, "GREENCERT_HOME": str(root / "home"), "PYTHONPATH": str(REPO / "plugins"),
           "GREENCERT_LABEL_PDF": "1"}  # fmt: skip
    env.pop("GREENCERT_SIGNING_KEY", None)
    scheme = REPO / "plugins" / "greencert" / "schemes" / "greencert-2026.3.yaml"
    registry = root / "registry-2026.3"
    run(str(REPO / ".venv" / "bin" / "greencert"), "certify", str(root / "bundles" / "chat-8b" / DAY),
        "--out", str(registry), "--scheme", str(scheme), env=env)  # fmt: skip
    [path] = [
        p
        for p in (registry / "dc-east-1" / "chat-8b").glob("*.json")
        if not p.name.endswith((".validation.json", ".log.json"))
    ]
    cert = json.loads(path.read_bytes())
    assert cert["scheme"]["version"] == "2026.3" and "confirmed" in cert["grading"]
    return {
        "cert": cert,
        "page": path.with_suffix(".html"),
        "kind": request.param,
        "pdf": path.with_suffix(".pdf"),
    }


@pytest.mark.parametrize("width", [1280, 390])
def test_issue16_label_states_efficiency_confirmed_and_measurement_apart(
    issue16: dict, browser, width: int
) -> None:
    from selenium.webdriver.common.by import By

    cert = issue16["cert"]
    g = cert["grading"]
    if issue16["kind"] == "added-keys":
        assert g["limited_by"] == "measurement"  # the case worth showing: metering holds the letter back
    browser.set_window_size(width, 1000)
    browser.get(issue16["page"].as_uri())
    viewport = browser.execute_script("return document.documentElement.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport
    # Nothing drawn beyond the right edge: every element's box, not only the page's scroll width.
    right = browser.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('body *'))"
        ".map(e => e.getBoundingClientRect().right))"
    )
    assert right <= viewport + 0.5, (width, right, viewport)
    for element_id in issue16_elements(cert):
        el = browser.find_element(By.ID, element_id)
        assert el.is_displayed(), element_id
        r = el.rect
        assert r["width"] > 0 and r["height"] > 0 and r["x"] >= 0, (element_id, r)

    # Three statements, three boxes that do not overlap, three different texts.
    cards = [
        browser.find_element(By.CSS_SELECTOR, f'[data-statement="{name}"]')
        for name in ("efficiency", "confirmed", "measurement")
    ]
    boxes = [c.rect for c in cards]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["width"] <= b["x"] + 0.5
                or b["x"] + b["width"] <= a["x"] + 0.5
                or a["y"] + a["height"] <= b["y"] + 0.5
                or b["y"] + b["height"] <= a["y"] + 0.5
            )
            assert apart, (width, a, b)
    assert len({c.text for c in cards}) == 3
    assert browser.find_element(By.ID, "grade-efficiency").text == g["efficiency"]["overall"] == cert["grade"]
    assert browser.find_element(By.ID, "grade-confirmed").text == g["confirmed"]["overall"]
    assert "Confirmed at 95 %" in cards[1].text.replace("CONFIRMED AT", "Confirmed at")
    limited = browser.find_element(By.ID, "limited-by").text
    if g["confirmed"]["overall"] != g["efficiency"]["overall"]:
        assert g["limited_by"] == "measurement" and limited.startswith("Limited by metering")
    else:
        assert g["limited_by"] == "efficiency" and limited.startswith("Limited by efficiency")
    assert browser.find_element(By.ID, "statement-measurement").text == g["measurement"]["label"]
    conf_idx = "ABCDEFG".index(g["confirmed"]["overall"])
    e_edge = g["energy_band_edges"]["upper_edges"][conf_idx]
    assert f"at most {e_edge:g} kWh" in browser.find_element(By.ID, "confirmed-meaning").text
    # The scale: outlined = the confirmed band of each figure.
    for what in ("energy", "carbon"):
        row = browser.find_element(By.CSS_SELECTOR, f".scale-row[data-figure={what}]")
        assert [s.text for s in row.find_elements(By.CSS_SELECTOR, ".seg.on")] == [g["confirmed"][what]]

    # Boundary components: each row is the certificate's, and the shown sum is the graded figure.
    components = cert["boundary"]["components"]
    for comp in components:
        cells = browser.find_elements(
            By.CSS_SELECTOR, f'#boundary tr[data-component="{comp["component"]}"] td'
        )
        assert number(cells[1].text) == pytest.approx(comp["per_million_tokens"]["value"], rel=5e-3)
        assert number(cells[2].text) == pytest.approx(100 * comp["share"], abs=0.5)
        assert cells[3].text == comp["basis"]
    total = sum(c["per_million_tokens"]["value"] for c in components)
    assert total == pytest.approx(cert["metrics"]["energy_per_million_tokens"]["value"], rel=1e-9)
    assert number(browser.find_element(By.ID, "boundary-sum").text) == pytest.approx(total, rel=5e-3)
    assert number(browser.find_element(By.ID, "energy-per-mtok").text) == pytest.approx(total, rel=5e-3)

    # Water and per-query figures, with their units (every one of them in the added-keys certificate).
    m = cert["metrics"]
    by_type = (cert.get("load_regime") or {}).get("tokens", {}).get("by_type")
    if issue16["kind"] == "added-keys":
        assert "water_per_thousand_queries" in m and by_type
    if "water_per_million_tokens" in m:
        water = browser.find_element(By.ID, "water-per-mtok").text
        assert number(water) == pytest.approx(m["water_per_million_tokens"]["value"], rel=5e-3)
        assert water.endswith(" L")
        scope = browser.find_element(By.ID, "water-scope").text
        assert ("not included" in scope) != bool(cert["water"]["offsite_included"])
    for element_id, key, unit in (
        ("per-query", "energy_per_thousand_queries", "Wh"),
        ("per-query-carbon", "carbon_per_thousand_queries", "g CO2e"),
        ("per-query-water", "water_per_thousand_queries", "L"),
    ):
        if key in m:
            shown = browser.find_element(By.ID, element_id).text
            assert number(shown) == pytest.approx(m[key]["value"], rel=5e-3) and shown.endswith(unit), shown
    if "requests" in m:
        assert number(browser.find_element(By.ID, "requests").text) == pytest.approx(m["requests"]["value"])
    for key, entry in (by_type or {}).items():
        if isinstance(entry, dict):  # {tokens, otel, ...}; the note is text
            cell = browser.find_element(By.CSS_SELECTOR, f'tr[data-token-type="{key}"] td')
            assert number(cell.text) == pytest.approx(entry["tokens"])

    SHOTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, height + 40)
    shot = SHOTS / f"label16-{issue16['kind']}-{width}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def sig3(value: float) -> str:
    """Three significant digits with trailing zeros kept (0.1 -> 0.100), thousands separated."""
    decimals = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def test_issue16_pdf_is_one_page_with_the_new_statements(issue16: dict, tmp_path: Path) -> None:
    """Everything issue 16 adds, with a long model name, still prints on one A4 page (and the PDF that
    certify printed for the real 2026.3 certificate is one page too)."""
    from greencert.certificate.label import render_label, render_pdf

    if issue16["pdf"] is not None:
        assert pdf_text(issue16["pdf"])[0] == 1
    cert = copy.deepcopy(issue16["cert"])
    cert["scope"]["model"] = (
        "organisation-with-a-long-name/Llama-3.1-70B-Instruct-FP8-dynamic-long-context-128k"
    )
    pdf = tmp_path / "issue16.pdf"
    pdf.write_bytes(render_pdf(render_label(cert)))
    pages, text = pdf_text(pdf)
    assert pages == 1
    flat = " ".join(text.split())
    assert "EFFICIENCY GRADE" in flat.upper() and "CONFIRMED AT 95 %" in flat.upper()
    assert cert["grading"]["measurement"]["label"] in flat
    total = sum(c["per_million_tokens"]["value"] for c in cert["boundary"]["components"])
    assert f"Sum = graded figure {sig3(total)}" in flat
    m = cert["metrics"]
    if "water_per_million_tokens" in m:
        assert f"{sig3(m['water_per_million_tokens']['value'])} L" in flat
    if "energy_per_thousand_queries" in m:
        assert f"{sig3(m['energy_per_thousand_queries']['value'])} Wh" in flat
    shot = SHOTS / f"label16-{issue16['kind']}-pdf.png"
    SHOTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["pdftoppm", "-r", "80", "-png", "-singlefile", str(pdf), str(shot.with_suffix(""))],
        check=True,
        timeout=60,
    )
    assert shot.stat().st_size > 20_000

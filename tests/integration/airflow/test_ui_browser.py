"""The "Green certificates" page in a real Airflow API server, seen by headless Chromium after logging in.

The certificates come from a real ``airflow dags test`` run of the sample fleet (SQLite), so the
page's "issued by" links point at that run through Airflow's own asset events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from airflow_cluster import (
    REPO,
    TEST_PASSWORD,
    TEST_USER,
    Cluster,
    auth_env,
    free_port,
    reference_run,
)

pytestmark = pytest.mark.integration

SCREENSHOT = REPO / "build" / "screenshots" / "green-certificates.png"
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
)


SECOND_DAY = "2026-01-03"  # a second certified day of two deployments: the trend charts have a line
REJECTED = ("chat-70b", "20260103T0000Z_20260104T0000Z")


def reject_a_bundle(work: Path) -> Path:
    """A bundle with a negative power sample through the real validate task: it writes its rejection."""
    from corpus.bad_bundles import CASES
    from greencert import tasks
    from greencert.errors import ValidationFailed

    folder = work / "runs" / REJECTED[0] / REJECTED[1]
    folder.mkdir(parents=True, exist_ok=True)
    bundle = CASES["power_negative"].write(work / "bad-bundle")
    with pytest.raises(ValidationFailed):
        tasks.validate(tasks.DEFAULT_CONFIG, str(bundle), str(folder))
    return folder


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    ref = reference_run(tmp_path_factory.getbasetemp() / "reference")
    ref.certify(SECOND_DAY, ("chat-8b", "code-32b"))
    work = tmp_path_factory.mktemp("ui-work")
    reject_a_bundle(work)
    home = tmp_path_factory.mktemp("ui-home")
    port = free_port()
    env = {
        **ref.env,
        **auth_env(home, role="viewer"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "GREENCERT_REGISTRY": str(ref.registry),
        "GREENCERT_WORK_DIR": str(work),
    }
    cluster = Cluster(home, env, port)
    cluster.start("api-server", ["api-server"])
    try:
        cluster.wait_api()
        yield cluster, ref
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def published(ref) -> dict[str, dict]:
    """certificate id -> certificate, read from the registry files (independent of the page)."""
    out = {}
    for path in sorted(ref.registry.glob("*/*/*.json")):
        if path.name.endswith(".validation.json"):
            continue
        cert = json.loads(path.read_bytes())
        if "certificate_id" in cert:
            out[cert["certificate_id"]] = cert
    return out


def sample_deployments() -> set[str]:
    import yaml

    fleet = yaml.safe_load((REPO / "dags" / "config" / "sample_fleet.yaml").read_text())
    return {d["deployment"] for d in fleet["deployments"]}


def test_page_lists_the_sample_fleet_after_login(ui, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cluster, ref = ui
    certs = published(ref)
    assert {c["scope"]["deployment"] for c in certs.values()} == sample_deployments()

    # Not logged in: the UI route sends the browser to Airflow's login page.
    browser.get(f"{cluster.api_url}/plugin/green-certificates")
    wait = WebDriverWait(browser, 90)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[name=username]")))
    assert "/auth/login" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "input[name=username]").send_keys(TEST_USER)
    browser.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(TEST_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    # Back in the Airflow UI, the plugin's page is shown in its frame. While the login redirects,
    # ChromeDriver may answer "aborted by navigation": keep waiting through it.
    from selenium.common.exceptions import WebDriverException

    wait = WebDriverWait(browser, 90, ignored_exceptions=(WebDriverException,))
    frame = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Green certificates']"))
    )
    browser.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#certificates tbody tr")))
    rows = browser.find_elements(By.CSS_SELECTOR, "#certificates tbody tr")
    shown = {}
    for row in rows:
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        shown[row.get_attribute("data-certificate-id")] = cells
    assert set(shown) == set(certs)
    for cid, cert in certs.items():
        site, deployment, model, size_class, period, grade, measurement, kwh, gco2e, status = shown[cid][:10]
        assert (site, deployment, model) == (
            cert["scope"]["site"],
            cert["scope"]["deployment"],
            cert["scope"]["model"],
        )
        assert size_class == cert["grading"]["size_class"]
        # Scheme 2026.3+: "B (confirmed C)" when the grade confirmed at 95 % is lower, and what was metered.
        confirmed = cert.get("confirmed_grade")
        assert grade == (
            f"{cert['grade']} (confirmed {confirmed})"
            if confirmed not in (None, cert["grade"])
            else cert["grade"]
        )
        assert measurement == ((cert["grading"].get("measurement") or {}).get("label") or "-")
        assert period == f"{cert['period']['start'][:10]} – {cert['period']['end'][:10]}"
        assert float(kwh) == pytest.approx(cert["metrics"]["energy_per_million_tokens"]["value"], rel=5e-4)
        assert float(gco2e) == pytest.approx(cert["metrics"]["carbon_per_million_tokens"]["value"], rel=5e-4)
        # The cell is the status, then "by <newer id>" when a newer certificate supersedes it.
        # (shown in the one vocabulary: a development-key certificate is "development key", not "valid")
        assert status.splitlines()[0] in ("valid", "development key", "superseded", "expired")
        # Issued by the dags-test run of FULL_FLEET_DATE.
        assert shown[cid][11].startswith("green_certification\nmanual__")
    # The measurement filter offers exactly the classes the certificates state (none before 2026.3).
    classes = {c["measurement_class"] for c in certs.values() if c.get("measurement_class")}
    options = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#measurement option")
    ]
    assert set(options) == (classes | {""} if classes else set())
    browser.switch_to.default_content()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    # The entry is in Airflow's navigation: the Browse menu links to the plugin page.
    browser.find_element(By.CSS_SELECTOR, "button[aria-label='Browse']").click()
    item = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "a[role=menuitem][data-value='Green certificates']"))
    )
    assert item.get_attribute("href").endswith("/plugin/green-certificates")


def test_filters_label_and_run_links_in_the_browser(ui, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    cluster, ref = ui
    certs = published(ref)
    wait = WebDriverWait(browser, 90)
    browser.get(f"{cluster.api_url}/greencert/")  # the page on its own (session cookie from the login)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#certificates")))
    Select(browser.find_element(By.ID, "site")).select_by_value("dc-cn-1")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait.until(ec.url_contains("site=dc-cn-1"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#certificates tbody tr")
    expected = {cid for cid, c in certs.items() if c["scope"]["site"] == "dc-cn-1"}
    assert {r.get_attribute("data-certificate-id") for r in rows} == expected

    # The label link opens the published label of that certificate.
    cid = rows[0].get_attribute("data-certificate-id")
    rows[0].find_element(By.CSS_SELECTOR, "a.label-link").click()
    wait.until(lambda d: d.current_url.endswith(".html"))
    assert cid in browser.page_source

    # The run link opens the Airflow UI page of the DAG run that published it.
    browser.back()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a.run-link")))
    browser.find_element(By.CSS_SELECTOR, "a.run-link").click()
    wait.until(ec.url_contains("/dags/green_certification/runs/manual__"))
    wait.until(ec.presence_of_element_located((By.XPATH, "//*[normalize-space(text())='Task Instances']")))


def test_json_api_pages_filters_and_requires_authentication(ui) -> None:
    cluster, ref = ui
    certs = published(ref)
    base = f"{cluster.api_url}/greencert"
    # Without credentials: 401 for the API, a redirect to the login page for a browser.
    assert requests.get(f"{base}/certificates", timeout=30).status_code == 401
    page = requests.get(f"{base}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and "/auth/login" in page.headers["location"]
    forged = requests.get(f"{base}/certificates", headers={"Authorization": "Bearer forged"}, timeout=30)
    assert forged.status_code == 403

    auth = {"Authorization": f"Bearer {cluster.token()}"}
    everything = requests.get(f"{base}/certificates", params={"limit": 500}, headers=auth, timeout=30).json()
    assert everything["total"] == len(certs) == len(everything["certificates"])
    ids = [c["certificate_id"] for c in everything["certificates"]]
    assert set(ids) == set(certs)
    pages = []
    for offset in range(0, len(certs), 3):
        r = requests.get(
            f"{base}/certificates", params={"limit": 3, "offset": offset}, headers=auth, timeout=30
        )
        body = r.json()
        assert body["total"] == len(certs) and body["offset"] == offset and body["limit"] == 3
        pages += [c["certificate_id"] for c in body["certificates"]]
    assert pages == ids  # pages tile the full list, in order, without overlap

    east = requests.get(f"{base}/certificates", params={"site": "dc-east-1"}, headers=auth, timeout=30).json()
    assert {c["certificate_id"] for c in east["certificates"]} == {
        cid for cid, c in certs.items() if c["scope"]["site"] == "dc-east-1"
    }
    one = requests.get(
        f"{base}/certificates", params={"deployment": "chat-8b"}, headers=auth, timeout=30
    ).json()
    # Other integration tests may have certified more days into the shared reference registry.
    assert [c["deployment"] for c in one["certificates"]] == [
        "chat-8b" for c in certs.values() if c["scope"]["deployment"] == "chat-8b"
    ]
    row = one["certificates"][0]
    assert row["issued_by"]["dag_id"] == "green_certification"
    assert row["links"]["dag_run"] == (
        f"/dags/green_certification/runs/{requests.utils.quote(row['issued_by']['run_id'], safe='')}"
    )
    # The links serve the published files, byte for byte.
    served = requests.get(f"{cluster.api_url}{row['links']['json']}", headers=auth, timeout=30)
    assert served.status_code == 200
    assert served.content == (ref.registry / row["paths"]["json"]).read_bytes()

    # Bad input is refused, and nothing outside the registry is served.
    assert (
        requests.get(f"{base}/certificates", params={"limit": 0}, headers=auth, timeout=30).status_code == 422
    )
    assert (
        requests.get(f"{base}/certificates", params={"site": "../x"}, headers=auth, timeout=30).status_code
        == 422
    )
    for path in ("files/%2E%2E/fleet.yaml", "files/..%2F..%2Fetc%2Fpasswd", "files/dc-east-1"):
        assert requests.get(f"{base}/{path}", headers=auth, timeout=30).status_code == 404
    # Read-only: no method but GET exists.
    assert requests.post(f"{base}/certificates", headers=auth, timeout=30).status_code == 405


def test_analyst_view_in_the_airflow_frame(ui, browser) -> None:
    """Totals, grade distribution, trend charts and the rejected run, inside the Airflow UI, checked
    against the certificate files and the rejection record (independently of the page's code)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cluster, ref = ui
    certs = published(ref)
    wait = WebDriverWait(browser, 90, ignored_exceptions=(WebDriverException,))
    shots = REPO / "build" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    for width in (1280, 390):
        browser.set_window_size(width, 1000)
        browser.get(f"{cluster.api_url}/plugin/green-certificates")
        frame = wait.until(
            ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Green certificates']"))
        )
        browser.switch_to.frame(frame)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#trends .trend")))
        viewport = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= viewport

        # Totals: every certificate counts (none is revoked or unverified here).
        counted = list(certs.values())
        assert int(browser.find_element(By.ID, "total-certificates").text) == len(counted)
        energy = sum(c["metrics"]["facility_energy"]["value"] for c in counted)
        shown_energy = float(browser.find_element(By.ID, "total-energy").text.split()[0].replace(",", ""))
        assert shown_energy == pytest.approx(energy, abs=0.05)
        tokens = sum(c["metrics"]["output_tokens"]["value"] for c in counted) / 1e6
        ratio = float(browser.find_element(By.ID, "fleet-kwh-per-mtok").text.split()[0])
        assert ratio == pytest.approx(energy / tokens, rel=5e-4)
        for grade in "ABCDEFG":
            cell = browser.find_element(By.CSS_SELECTOR, f"#grade-distribution [data-grade={grade}]")
            assert int(cell.text) == sum(c["grade"] == grade for c in counted)

        # One trend card per deployment, one point and one whisker per certificate in each chart.
        cards = browser.find_elements(By.CSS_SELECTOR, "#trends .trend")
        per_deployment: dict[str, int] = {}
        for c in counted:
            key = f"{c['scope']['site']}/{c['scope']['deployment']}"
            per_deployment[key] = per_deployment.get(key, 0) + 1
        assert {card.get_attribute("data-deployment") for card in cards} == set(per_deployment)
        assert max(per_deployment.values()) >= 2
        for card in cards:
            charts = card.find_elements(By.CSS_SELECTOR, "svg.trend-chart")
            assert [ch.get_attribute("data-unit") for ch in charts] == ["kWh/Mtok", "gCO2e/Mtok"]
            n = per_deployment[card.get_attribute("data-deployment")]
            for chart in charts:
                assert len(chart.find_elements(By.CSS_SELECTOR, "circle.point")) == n
                assert len(chart.find_elements(By.CSS_SELECTOR, "line.whisker")) == n
                r = chart.rect
                assert r["width"] > 200 and r["x"] >= 0 and r["x"] + r["width"] <= viewport + 0.5, (width, r)

        # The rejected run, with the task's reason and its Data Docs.
        row = browser.find_element(By.CSS_SELECTOR, f"#rejections tr[data-rejection='{'/'.join(REJECTED)}']")
        assert "ValidationFailed" in row.text and "value is negative" in row.text and "gpu0" in row.text
        browser.switch_to.default_content()
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(shots / f"green-certificates-analyst-{width}.png"))
        assert (shots / f"green-certificates-analyst-{width}.png").stat().st_size > 10_000

    # Inside the frame: the rejected run's Data Docs page shows the failed expectation and the device.
    browser.set_window_size(1280, 1000)
    browser.get(f"{cluster.api_url}/plugin/green-certificates")
    frame = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Green certificates']"))
    )
    browser.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#rejections a.rejection-docs")))
    browser.find_element(By.CSS_SELECTOR, "#rejections a.rejection-docs").click()
    # The link opens GX's page of the failed suite (power_profile: the negative sample is in power.csv).
    wait.until(
        lambda d: d.current_url.endswith("whole.html") and "/validations/power_profile/" in d.current_url
    )
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "body")))
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "Unsuccessful Expectations" in text and "n_negative" in text
    assert "gpu0" in text  # the offending row: the device whose statistics broke the expectation

    # A certificate's label opens inside the Airflow frame.
    browser.switch_to.default_content()
    browser.get(f"{cluster.api_url}/plugin/green-certificates")
    frame = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "iframe[title='Green certificates']"))
    )
    browser.switch_to.frame(frame)
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#certificates a.label-link")))
    first = browser.find_element(By.CSS_SELECTOR, "#certificates tbody tr")
    cid = first.get_attribute("data-certificate-id")
    first.find_element(By.CSS_SELECTOR, "a.label-link").click()
    headline = "grade-efficiency" if "confirmed" in certs[cid]["grading"] else "grade-grade"
    wait.until(ec.presence_of_element_located((By.ID, headline)))
    assert browser.find_element(By.ID, headline).text == certs[cid]["grade"]
    browser.switch_to.default_content()
    assert browser.find_element(By.CSS_SELECTOR, "iframe[title='Green certificates']").is_displayed()
    browser.save_screenshot(str(shots / "label-in-airflow.png"))

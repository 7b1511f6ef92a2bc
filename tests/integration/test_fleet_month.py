"""Fleet DAGs: parse-time imports stay light; a (short) month certified from its daily partials."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_harness import REPO, airflow_env
from greencert.compute.partials import combine, load_partials
from greencert.month import certify_day_task, certify_month_task, days_of

pytestmark = pytest.mark.integration

HEAVY = ("great_expectations", "pandas", "numpy", "pyarrow", "pint", "duckdb", "scipy")


@pytest.mark.parametrize("dag_file", sorted(p.name for p in (REPO / "dags").glob("*.py")))
def test_dag_file_imports_nothing_heavy_beyond_airflow_sdk(dag_file: str, tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(REPO / 'dags' / dag_file)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        f"heavy = {HEAVY!r}\n"
        "print('HEAVY=' + ','.join(sorted({m.split('.')[0] for m in set(sys.modules) - before} & set(heavy))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_monthly_dag_maps_one_task_per_day(tmp_path: Path) -> None:
    code = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags' / 'green_certification_monthly.py')!r})\n"
        "dag = bag.dags['green_certification_monthly']\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'tasks': {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},\n"
        "  'mapped': sorted(t.task_id for t in dag.tasks if getattr(t, 'is_mapped', False))}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["tasks"] == {"days": ["certify_day"], "certify_day": ["certify_month"], "certify_month": []}
    assert result["mapped"] == ["certify_day"]


def test_days_of_a_month() -> None:
    days = days_of("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z")
    assert len(days) == 28 and days[0] == "2026-02-01" and days[-1] == "2026-02-28"


def test_month_certificate_is_the_sum_of_the_daily_partials(tmp_path: Path) -> None:
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=3)  # a short "month": the same code path as 28-31 days
    roots = {k: tmp_path / k for k in ("days", "registry", "work", "partials")}
    daily = {}
    for day in days_of(start, end):
        daily[day] = certify_day_task(
            roots["days"],
            day,
            roots["registry"],
            roots["work"],
            roots["partials"],
            None,
            simulate_scale=0.002,
        )
    deployments = {d for paths in daily.values() for d in paths}
    assert len(deployments) == 1 and all(len(paths) == 1 for paths in daily.values())

    certificates = certify_month_task(roots["partials"], start, end, roots["registry"], roots["work"])
    assert set(certificates) == deployments
    (deployment,) = deployments
    cert = json.loads(Path(certificates[deployment]).read_text())
    assert cert["period"] == {"start": "2026-03-01T00:00:00Z", "end": "2026-03-04T00:00:00Z"}
    partials = load_partials([Path(daily[day][deployment]) for day in sorted(daily)])
    for name, figure in combine(partials).metrics().items():
        assert {k: cert["metrics"][name][k] for k in figure} == figure, name
    day_certs = [_day_certificate(certificates[deployment], day) for day in sorted(daily)]
    _assert_month_states_every_section(cert, day_certs)
    assert len(cert["hourly"]["hour_start"]) == 72
    assert cert["data_quality"]["days"] == 3
    # The month's evidence is its daily partials, hashed in the certificate.
    folder = Path(certificates[deployment]).with_suffix(".evidence")
    assert sorted(p.name for p in folder.iterdir()) == [f"{day}.json" for day in sorted(daily)]
    assert [i["file"] for i in cert["inputs"]] == [f"{day}.json" for day in sorted(daily)]
    # Each day also has its own signed certificate, and the month its own.
    assert len(list(Path(certificates[deployment]).parent.glob("*Z.json.sig"))) == 4


def _day_certificate(month_path: str, day: str) -> dict:
    first = dt.datetime.fromisoformat(day)
    span = f"{first:%Y%m%d}T0000Z-{first + dt.timedelta(days=1):%Y%m%d}T0000Z"
    (path,) = Path(month_path).parent.glob(f"*.{span}.json")
    return json.loads(path.read_text())


def _assert_month_states_every_section(month: dict, days: list[dict]) -> None:
    """Every section of the days is in the month, its sums and intervals from the days' (by hand here)."""
    per_day_only = {"certificate_id", "signing", "valid_until", "issued_at", "evidence", "period"}
    assert set(days[0]) - per_day_only <= set(month), set(days[0]) - set(month)
    mtok = [d["metrics"]["output_tokens"]["value"] / 1e6 for d in days]
    for name in ("energy_per_million_tokens", "carbon_per_million_tokens", "sci_per_million_tokens"):
        # A quantile of a sum of fully correlated day totals is the sum of the days' quantiles.
        lo = sum(d["metrics"][name]["interval95"][0] * t for d, t in zip(days, mtok, strict=True)) / sum(mtok)
        hi = sum(d["metrics"][name]["interval95"][1] * t for d, t in zip(days, mtok, strict=True)) / sum(mtok)
        assert month["metrics"][name]["interval95"] == pytest.approx([lo, hi], rel=5e-4), name  # 4 digits
        assert month["uncertainty"]["intervals"][name]["interval95"] == month["metrics"][name]["interval95"]
    location = sum(d["carbon"]["location_based"]["emissions"]["value"] for d in days)
    assert month["carbon"]["location_based"]["emissions"]["value"] == pytest.approx(location, rel=1e-11)
    embodied = sum(d["carbon"]["embodied"]["emissions"]["value"] for d in days)
    assert month["carbon"]["sci"]["score"]["value"] == pytest.approx((location + embodied) / sum(mtok), rel=1e-11)
    for i, component in enumerate(month["boundary"]["components"]):
        kwh = sum(d["boundary"]["components"][i]["energy"]["value"] for d in days)
        assert component["energy"]["value"] == pytest.approx(kwh, rel=1e-11), component["component"]
    hours = sum(c["hours"] for d in days for c in d["reconciliation"]["checks"] if c["check"] == "layer_order")
    assert sum(c["hours"] for c in month["reconciliation"]["checks"] if c["check"] == "layer_order") == hours
    tokens = sum(d["load_regime"]["tokens"]["output"] for d in days)
    assert month["load_regime"]["tokens"]["output"] == tokens == month["metrics"]["output_tokens"]["value"]
    assert month["grading"]["confidence"]["level"] == 0.95  # graded with its interval, like a day


def test_verify_recomputes_a_month_and_checks_each_day(tmp_path: Path) -> None:
    """verify recomputes the month from its partials and verifies every day's certificate; a month built
    from an edited partial, or over a revoked day, fails (docs/trust.md)."""
    from greencert.certificate.registry import revoke
    from greencert.certificate.verify import TrustOptions, VerificationFailed, verify_certificate

    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=2)
    roots = {k: tmp_path / k for k in ("days", "registry", "work", "partials")}
    for day in days_of(start, end):
        certify_day_task(roots["days"], day, roots["registry"], roots["work"], roots["partials"], None, 0.002)
    (month,) = certify_month_task(roots["partials"], start, end, roots["registry"], roots["work"]).values()
    options = TrustOptions(allow_development_key=True)
    at = end + dt.timedelta(days=1)
    lines = verify_certificate(Path(month), at=at, options=options).lines
    assert "recomputed figures: ok (identical)" in lines
    assert any(line.startswith("days: ok (2 day certificates verified") for line in lines), lines

    # The issuer re-issues the month from an edited partial (its own hash in the new certificate).
    (partial_path,) = [p for p in roots["partials"].rglob("2026-03-01.json")]
    doc = json.loads(partial_path.read_text())
    doc["facility_energy_kwh"] = [v * 0.5 for v in doc["facility_energy_kwh"]]
    doc["figures"]["hourly"]["facility_energy_kwh"] = [
        float(f"{v:.9g}") for v in doc["facility_energy_kwh"]
    ]
    partial_path.write_text(json.dumps(doc))
    (month,) = certify_month_task(roots["partials"], start, end, roots["registry"], roots["work"]).values()
    with pytest.raises(VerificationFailed) as failed:
        verify_certificate(Path(month), at=at, options=options)
    assert failed.value.reason == "day-mismatch" and "hourly" in failed.value.problem

    # Put the true partial back, re-issue, then revoke a day: the month falls with it.
    doc["facility_energy_kwh"] = [v * 2 for v in doc["facility_energy_kwh"]]
    doc["figures"]["hourly"]["facility_energy_kwh"] = [
        float(f"{v:.9g}") for v in doc["facility_energy_kwh"]
    ]
    partial_path.write_text(json.dumps(doc))
    (month,) = certify_month_task(roots["partials"], start, end, roots["registry"], roots["work"]).values()
    verify_certificate(Path(month), at=at, options=options)
    day_id = _day_certificate(month, "2026-03-02")["certificate_id"]
    revoke(roots["registry"], day_id, "meter fault found")
    with pytest.raises(VerificationFailed) as failed:
        verify_certificate(Path(month), at=at, options=options)
    assert failed.value.reason == "day-certificate-invalid" and "revoked" in failed.value.problem

    # A day whose certificate is not beside the month (removed from the registry's folder).
    first_day = Path(month).parent / (_day_certificate(month, "2026-03-01")["certificate_id"] + ".json")
    first_day.rename(tmp_path / first_day.name)
    with pytest.raises(VerificationFailed) as failed:
        verify_certificate(Path(month), at=at, options=options)
    assert failed.value.reason == "day-certificate-missing" and "2026-03-01" in failed.value.problem

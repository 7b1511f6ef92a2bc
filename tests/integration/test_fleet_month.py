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
from greencert.fleet import certify_day_task, certify_month_task, days_of

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
        assert cert["metrics"][name] == figure, name
    assert len(cert["hourly"]["hour_start"]) == 72
    assert cert["data_quality"]["days"] == 3
    # The month's evidence is its daily partials, hashed in the certificate.
    folder = Path(certificates[deployment]).with_suffix(".evidence")
    assert sorted(p.name for p in folder.iterdir()) == [f"{day}.json" for day in sorted(daily)]
    assert [i["file"] for i in cert["inputs"]] == [f"{day}.json" for day in sorted(daily)]
    # Each day also has its own signed certificate, and the month its own.
    assert len(list(Path(certificates[deployment]).parent.glob("*Z.json.sig"))) == 4

"""How the DAGs are wired for operations, checked on the DAGs Airflow itself parses (DagBag).

Bounded extract with exponential-backoff retries, failure callbacks on every task, the Deadline
Alert (only when configured), the asset outlet of publish and the asset schedule of the index DAG,
param validation of the trigger form, and no heavy imports when Airflow parses the DAG files.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_harness import REPO, airflow_env

pytestmark = pytest.mark.integration

INSPECT = r"""
import json, datetime as dt
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Asset
bag = DagBag(dag_folder=DAGS)
cert = bag.dags["green_certification"]
index = bag.dags["greencert_registry_index"]
tasks = {t.task_id: t for t in cert.tasks}
extract = tasks["certify_deployment.extract"]
publish = tasks["certify_deployment.publish"]

import copy
def rejects(conf):
    params = copy.deepcopy(cert.params)
    try:
        params.update(conf)  # as a trigger's conf is merged over the defaults
        params.validate()
    except Exception as exc:
        return type(exc).__name__
    return None

deadline = cert.deadline[0] if cert.deadline else None
print("RESULT=" + json.dumps({
    "errors": {k: str(v) for k, v in bag.import_errors.items()},
    "extract": {
        "max_active_tis_per_dag": extract.max_active_tis_per_dag,
        "retries": extract.retries,
        "backoff": extract.retry_exponential_backoff,
        "max_retry_delay": extract.max_retry_delay.total_seconds(),
    },
    "failure_callbacks": sorted(
        t.task_id for t in cert.tasks
        if any(type(c).__name__ == "GreenCertAlert" for c in (t.on_failure_callback or []))
    ),
    "tasks": sorted(tasks),
    "publish_outlets": [o.name for o in publish.outlets],
    "index_schedule": [a.name for a in index.timetable.asset_condition.objects],
    "index_failure_callbacks": all(t.on_failure_callback for t in index.tasks),
    "deadline": None if deadline is None else {
        "reference": type(deadline.reference).__name__,
        "hours": deadline.interval.total_seconds() / 3600,
        "callback": deadline.callback.path,
        "kwargs": deadline.callback.kwargs,
    },
    "params_ok": rejects({"deployments": ["chat-8b"], "registry": "/srv/registry"}),
    "params_bad_name": rejects({"deployments": ["../etc"]}),
    "params_duplicate": rejects({"deployments": ["chat-8b", "chat-8b"]}),
    "params_relative_registry": rejects({"registry": "out/registry"}),
    "params_config_not_yaml": rejects({"config_path": "/etc/passwd"}),
}))
"""


def inspect(tmp_path: Path, **env: str) -> dict:
    code = f"DAGS = {str(REPO / 'dags')!r}\n" + INSPECT
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT="))
    return json.loads(line.removeprefix("RESULT="))


def test_operational_wiring_of_both_dags(tmp_path: Path) -> None:
    got = inspect(tmp_path, GREENCERT_EXTRACT_CONCURRENCY="3", GREENCERT_DEADLINE_HOURS="6")
    assert got["errors"] == {}
    assert got["extract"] == {
        "max_active_tis_per_dag": 3,
        "retries": 3,
        "backoff": True,
        "max_retry_delay": 600.0,
    }
    assert got["failure_callbacks"] == got["tasks"]  # every task alerts on failure
    assert got["publish_outlets"] == ["greencert_certificates"]
    assert got["index_schedule"] == ["greencert_certificates"]
    assert got["index_failure_callbacks"] is True
    assert got["deadline"] == {
        "reference": "PeriodEndDeadline",
        "hours": 6.0,
        "callback": "greencert.alerts.GreenCertAlert",
        "kwargs": {"event": "certificate_late"},
    }
    assert got["params_ok"] is None
    for bad in ("params_bad_name", "params_duplicate", "params_relative_registry", "params_config_not_yaml"):
        assert got[bad] == "ParamValidationError", bad


def test_deadline_is_off_unless_configured(tmp_path: Path) -> None:
    got = inspect(tmp_path)
    assert got["deadline"] is None
    assert got["extract"]["max_active_tis_per_dag"] == 4


def test_dag_files_and_plugin_do_not_import_heavy_modules(tmp_path: Path) -> None:
    code = (
        "import sys, runpy\n"
        "import airflow.sdk, airflow.plugins_manager\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(REPO / 'dags' / 'greencert_registry_index.py')!r})\n"
        f"runpy.run_path({str(REPO / 'dags' / 'green_certification.py')!r})\n"
        f"runpy.run_path({str(REPO / 'plugins' / 'greencert_ui_plugin.py')!r})\n"
        "new = set(sys.modules) - before\n"
        "heavy = ('great_expectations', 'pandas', 'numpy', 'pyarrow', 'pint', 'duckdb')\n"
        "print('HEAVY=' + ','.join(sorted(m for m in new if m.split('.')[0] in heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="

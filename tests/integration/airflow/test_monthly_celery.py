"""The monthly DAG on CeleryExecutor: mapped fleet-days on two workers, one month per deployment.

Real processes, as in ``test_celery_backfill.py` (same folder)`: API server, scheduler, dag-processor and two
Celery workers (concurrency 1 each, distinct names) on a PostgreSQL database and a Redis database
of the test's own. February 2026 (28 days) of a one-deployment fleet is simulated by the DAG's
own ``certify_day`` tasks (28 mapped task instances, two at a time), each a fleet-day certified
on the process pool inside the Celery task (``greencert.fleet``); ``certify_month`` then combines
the deployment's 28 day partials into its month certificate.

The claims: every mapped day ran, on both workers; each day certificate, the month certificate
and their signatures are byte-identical to the same task bodies run in one process here; and
``greencert verify`` accepts the month (recomputed from its partials, each day verified).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_cluster import (
    Cluster,
    certificate_files,
    claim_redis_db,
    cluster_env,
    create_database,
    drop_database,
    free_port,
    release_redis_db,
    signing_key,
    start_celery_deployment,
    wait_for,
)

pytestmark = pytest.mark.integration

DAG_ID = "green_certification_monthly"
WORKERS = ("worker-1", "worker-2")
SCALE = 0.002  # 2 nodes, 16 GPUs, one deployment: 92,000 power rows a day
MONTH_START, MONTH_END = dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _params(base: Path) -> dict[str, Any]:
    return {
        "fleet_root": str(base / "days"),
        "registry": str(base / "registry"),
        "work_dir": str(base / "work"),
        "partials_dir": str(base / "partials"),
        "scheme": "",
        "simulate_scale": SCALE,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("celery-month")
    key = signing_key(base)
    db_name = f"greencert_it_{uuid.uuid4().hex[:10]}"
    db_url = create_database(db_name)
    redis_db = claim_redis_db()
    port = free_port()
    env = cluster_env(
        base / "home",
        db_url,
        redis_db,
        port,
        GREENCERT_SIGNING_KEY=str(key),
        GREENCERT_LABEL_PDF="0",
        # Two days at a time (the DAG's max_active_tis_per_dagrun): one per worker.
        GREENCERT_FLEET_DAYS_IN_PARALLEL="2",
    )
    cluster = Cluster(base / "home", env, port)
    try:
        start_celery_deployment(cluster, WORKERS)
        yield cluster, base, key
    finally:
        cluster.stop()
        release_redis_db(redis_db)
        drop_database(db_name)


def _runs(cluster: Cluster) -> list[dict[str, Any]]:
    return cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"limit": 100})["dag_runs"]


def _task_instances(cluster: Cluster, run_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = cluster.api(
            "GET",
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances",
            params={"limit": 100, "offset": len(out)},
        )
        out += page["task_instances"]
        if len(out) >= page["total_entries"] or not page["task_instances"]:
            return out


def _in_one_process(base: Path, key: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The same task bodies, in this process, into ``base``: the reference registry."""
    from greencert.month import certify_day_task, certify_month_task, days_of

    monkeypatch.setenv("GREENCERT_SIGNING_KEY", str(key))
    monkeypatch.setenv("GREENCERT_LABEL_PDF", "0")
    p = _params(base)
    for day in days_of(MONTH_START, MONTH_END):
        certify_day_task(p["fleet_root"], day, p["registry"], p["work_dir"], p["partials_dir"], None, SCALE)
    certify_month_task(p["partials_dir"], MONTH_START, MONTH_END, p["registry"], p["work_dir"], None)
    return Path(p["registry"])


def test_monthly_dag_on_celery_equals_one_process(
    cluster: tuple[Cluster, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow, base, key = cluster
    wait_for(
        lambda: DAG_ID in {d["dag_id"] for d in airflow.api("GET", "/api/v2/dags")["dags"]},
        300,
        "the dag-processor to parse the monthly DAG",
        interval=3,
    )
    # Created while the DAG is paused (queued, not started); the logical date 2026-03-01 has the
    # data interval of February.
    mine = airflow.api(
        "POST",
        f"/api/v2/dags/{DAG_ID}/dagRuns",
        json={"logical_date": "2026-03-01T00:00:00Z", "conf": _params(base)},
    )
    assert mine["data_interval_start"].startswith("2026-02-01")
    assert mine["data_interval_end"].startswith("2026-03-01")
    airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    # Unpausing makes the scheduler create the latest scheduled month too (catchup is off), with
    # the DAG's default folders: stopped and removed as soon as it appears (a running run must be
    # ended before it can be deleted), so only this run certifies.
    def scheduled_removed() -> bool:
        airflow.check_running()
        for run in _runs(airflow):
            if run["run_type"] == "scheduled":
                path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"
                if run["state"] not in ("success", "failed"):
                    airflow.api("PATCH", path, json={"state": "failed"})
                airflow.api("DELETE", path)
                return True
        return False

    wait_for(scheduled_removed, 120, "the scheduler's own run", interval=1)

    # Meanwhile: the reference, the same task bodies in this process.
    reference = _in_one_process(tmp_path / "reference", key, monkeypatch)

    def finished() -> dict[str, Any] | None:
        airflow.check_running()
        (run,) = [r for r in _runs(airflow) if r["dag_run_id"] == mine["dag_run_id"]]
        return run if run["state"] in ("success", "failed") else None

    try:
        run = wait_for(finished, 1800, "the monthly run", interval=10)
    except TimeoutError:
        pytest.fail("the monthly run did not finish:\n" + airflow.logs())
    assert run["state"] == "success", airflow.logs()

    # 28 mapped days, each a Celery task; both workers took some.
    tis = _task_instances(airflow, mine["dag_run_id"])
    days = [t for t in tis if t["task_id"] == "certify_day"]
    assert sorted(t["map_index"] for t in days) == list(range(28))
    assert {t["state"] for t in tis} == {"success"}
    assert {t["hostname"] for t in days} == set(WORKERS)

    # Byte-identical: 28 day certificates and the month's, with signatures.
    distributed, expected = certificate_files(base / "registry"), certificate_files(reference)
    assert len(distributed) == 2 * (28 + 1)
    assert distributed.keys() == expected.keys()
    assert [name for name in distributed if distributed[name] != expected[name]] == []

    # The month verifies against the issuer's public key (recomputed from its partials, every
    # day certificate checked).
    from greencert.certificate.verify import verify_certificate

    public = tmp_path / "issuer-public.pem"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(public)], check=True)
    periods = {
        name: json.loads(distributed[name])["period"] for name in distributed if name.endswith(".json")
    }
    (month,) = [n for n, p in periods.items() if p["start"][:10] == "2026-02-01" and p["end"][:10] == "2026-03-01"]
    lines = verify_certificate(
        base / "registry" / month, at=MONTH_END + dt.timedelta(days=1), public_key=public
    ).lines
    assert "recomputed figures: ok (identical)" in lines
    assert any(line.startswith("days: ok (28 day certificates verified") for line in lines), lines

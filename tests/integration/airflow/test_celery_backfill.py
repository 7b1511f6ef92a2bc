"""The certification DAG on a distributed deployment, as operators run it.

Real processes: API server (UI, REST and task-execution API), scheduler, dag-processor and two
Celery workers (concurrency 1 each, distinct worker names) on a PostgreSQL metadata database of
the test's own and a Redis broker database of its own. Airflow itself is the distributed engine.

One deployment, several claims:

* ``airflow backfill create`` over three past days and the scheduler's own scheduled run produce
  byte-identical certificates (and signatures) to ``airflow dags test`` runs of the same periods
  on SQLite; a backfill re-run of a period replaces the certificate, never duplicates it;
* mapped tasks ran on both workers; ``extract`` never ran more instances at once than its
  ``max_active_tis_per_dag`` bound;
* every publish emitted an asset event with grade and figures, and the asset-scheduled
  registry-index DAG rebuilt the index;
* a failing task and a late certificate raise alerts at the webhook, backfills' late periods don't;
* trigger-form params are validated (a bad deployment name is refused before any run exists);
* the certificates page's JSON on this API server lists the certificates with their issuing runs.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from airflow_cluster import (
    FULL_FLEET_DATE,
    SUBSET,
    Cluster,
    certificate_files,
    claim_redis_db,
    cluster_env,
    create_database,
    drop_database,
    fleet_config,
    free_port,
    reference_run,
    release_redis_db,
    start_celery_deployment,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKFILL_FROM, BACKFILL_TO = "2026-01-01", "2026-01-03"  # logical dates: periods Jan 1, 2, 3
BACKFILL_PERIOD_ENDS = ("2026-01-02", "2026-01-03", "2026-01-04")
WORKERS = ("worker-1", "worker-2")


class Webhook:
    """A local HTTP endpoint standing in for the operators' alert webhook."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        received = self.alerts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_state(cluster: Cluster, dag_id: str) -> list[dict[str, Any]]:
    return cluster.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]


def task_instances(cluster: Cluster, dag_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = cluster.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/~/taskInstances", params={"limit": 100, "offset": len(out)}
        )
        out += page["task_instances"]
        if len(out) >= page["total_entries"] or not page["task_instances"]:
            return out


def max_overlap(intervals: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """Most intervals open at one instant (sweep over start/end events; an end before a start at a tie)."""
    events = sorted(
        [(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1])
    )
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best


def parse(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    ref = reference_run(tmp_path_factory.getbasetemp() / "reference")
    base = tmp_path_factory.mktemp("celery")
    config = fleet_config(base, SUBSET)
    db_name = f"greencert_it_{uuid.uuid4().hex[:10]}"
    db_url = create_database(db_name)
    redis_db = claim_redis_db()
    webhook = Webhook()
    port = free_port()
    env = cluster_env(
        base / "home",
        db_url,
        redis_db,
        port,
        GREENCERT_CONFIG=str(config),
        GREENCERT_SIGNING_KEY=str(ref.key),
        GREENCERT_LABEL_PDF="0",
        GREENCERT_ALERT_WEBHOOK=webhook.url,
        # A period's certificate is due when the period ends: every run here is late.
        GREENCERT_DEADLINE_HOURS="0",
        GREENCERT_EXTRACT_CONCURRENCY="1",
    )
    cluster = Cluster(base / "home", env, port)
    try:
        start_celery_deployment(cluster, WORKERS)
        yield cluster, ref, base, webhook
    finally:
        cluster.stop()
        webhook.close()
        release_redis_db(redis_db)
        drop_database(db_name)


def test_distributed_backfill_reproduces_the_sqlite_certificates(deployment) -> None:
    cluster, ref, base, webhook = deployment
    registry = base / "registry"

    def dags_parsed() -> bool:
        cluster.check_running()
        dags = {d["dag_id"] for d in cluster.api("GET", "/api/v2/dags")["dags"]}
        return {"green_certification", "greencert_registry_index"} <= dags

    wait_for(dags_parsed, 300, "the dag-processor to parse both DAGs", interval=3)

    # The SQLite reference for the same periods, computed while the cluster works (its own
    # processes and database). The scheduler's run will certify the last complete day.
    today = dt.datetime.now(dt.UTC).date()
    reference_days = [*BACKFILL_PERIOD_ENDS, f"{today:%Y-%m-%d}"]
    pool = ThreadPoolExecutor(max_workers=1)
    reference_done = pool.submit(
        lambda: [ref.certify(day, None if day == FULL_FLEET_DATE else SUBSET) for day in reference_days]
    )

    # Trigger-form params are validated before a run exists.
    r = requests.post(
        f"{cluster.api_url}/api/v2/dags/green_certification/dagRuns",
        headers={"Authorization": f"Bearer {cluster.token()}"},
        json={"logical_date": "2026-01-09T00:00:00Z", "conf": {"deployments": ["../etc"]}},
        timeout=60,
    )
    assert r.status_code == 400 and "deployments" in r.text, r.text

    # Unpausing lets the scheduler run: it creates the latest scheduled run (catchup off) and
    # schedules on the certificates asset.
    for dag_id in ("greencert_registry_index", "green_certification"):
        cluster.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    cluster.cli(
        "backfill",
        "create",
        "--dag-id",
        "green_certification",
        "--from-date",
        BACKFILL_FROM,
        "--to-date",
        BACKFILL_TO,
    )
    # A run by hand that fails: an unknown deployment (valid name, not in the fleet).
    cluster.api(
        "POST",
        "/api/v2/dags/green_certification/dagRuns",
        json={"logical_date": "2026-01-10T00:00:00Z", "conf": {"deployments": ["no-such-deployment"]}},
    )

    def all_finished() -> list[dict[str, Any]] | None:
        cluster.check_running()
        runs = run_state(cluster, "green_certification")
        kinds = [r["run_type"] for r in runs]
        done = all(r["state"] in ("success", "failed") for r in runs)
        return (
            runs
            if done and kinds.count("backfill") == 3 and "scheduled" in kinds and "manual" in kinds
            else None
        )

    try:
        runs = wait_for(all_finished, 1800, "the certification runs", interval=10)
    except TimeoutError:
        pytest.fail("runs did not finish:\n" + cluster.logs())
    by_type: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_type.setdefault(run["run_type"], []).append(run)
    assert [r["state"] for r in by_type["backfill"]] == ["success"] * 3
    assert [r["state"] for r in by_type["scheduled"]] == ["success"]
    assert [r["state"] for r in by_type["manual"]] == ["failed"]
    scheduled_end = parse(by_type["scheduled"][0]["data_interval_end"])
    assert sorted(r["data_interval_end"][:10] for r in by_type["backfill"]) == list(BACKFILL_PERIOD_ENDS)

    # Byte-identical certificates and signatures: the same periods through `airflow dags test` on SQLite.
    reference_done.result(timeout=1800)
    pool.shutdown()
    ref.certify(f"{scheduled_end:%Y-%m-%d}", SUBSET)  # already done unless the clock passed midnight
    distributed = certificate_files(registry)
    expected = {k: v for k, v in certificate_files(ref.registry).items() if k.split("/")[1] in SUBSET}
    assert len(distributed) == 2 * len(SUBSET) * 4  # .json + .json.sig, per deployment, per period
    assert distributed.keys() == expected.keys()
    assert [k for k in distributed if distributed[k] != expected[k]] == []

    # Mapped tasks ran on both Celery workers; extract never exceeded its bound of 1 at a time.
    tis = task_instances(cluster, "green_certification")
    mapped = [t for t in tis if t["map_index"] >= 0 and t["state"] == "success"]
    # 4 periods x deployments x 6 tasks (extract, segments, validate, compute, grade, publish).
    assert len(mapped) == 4 * len(SUBSET) * 6
    assert {t["hostname"] for t in mapped} == set(WORKERS)
    extracts = [
        (parse(t["start_date"]), parse(t["end_date"])) for t in mapped if t["task_id"].endswith(".extract")
    ]
    assert max_overlap(extracts) == 1
    others = [(parse(t["start_date"]), parse(t["end_date"])) for t in mapped]
    assert max_overlap(others) == 2  # the two workers did run tasks at the same time

    # Asset events: one per published certificate, with grade and figures as metadata.
    assets = cluster.api("GET", "/api/v2/assets", params={"name_pattern": "greencert_certificates"})["assets"]
    events = cluster.api("GET", "/api/v2/assets/events", params={"asset_id": assets[0]["id"], "limit": 100})
    extras = [e["extra"] for e in events["asset_events"]]
    assert len(extras) == 4 * len(SUBSET)
    for extra in extras:
        cert = json.loads((registry / extra["certificate"]).read_bytes())
        assert extra["grade"] == cert["grade"] and extra["certificate_id"] == cert["certificate_id"]
        assert extra["energy_kwh_per_mtok"] == cert["metrics"]["energy_per_million_tokens"]["value"]

    # The asset-scheduled index DAG rebuilt the index: it lists every certificate.
    def index_current() -> bool:
        index_runs = run_state(cluster, "greencert_registry_index")
        if not index_runs or any(r["state"] not in ("success", "failed") for r in index_runs):
            return False
        index = json.loads((registry / "index.json").read_bytes())
        return len(index["certificates"]) == 4 * len(SUBSET)

    wait_for(index_current, 300, "the registry-index DAG", interval=5)
    assert {r["state"] for r in run_state(cluster, "greencert_registry_index")} == {"success"}
    # Triggered by the certificates asset; the hourly re-signing of the registry status may add a
    # scheduled run (the latest hour, on unpause), nothing else.
    run_types = {r["run_type"] for r in run_state(cluster, "greencert_registry_index")}
    assert "asset_triggered" in run_types and run_types <= {"asset_triggered", "scheduled"}, run_types

    # Alerts: the failed task, and late certificates of the scheduled and manual runs; not the backfills'.
    failed = [a for a in webhook.alerts if a["event"] == "task_failed"]
    assert len(failed) == 1 and failed[0]["task_id"] == "deployments"
    assert "unknown deployment(s) no-such-deployment" in failed[0]["message"]
    late = wait_for(
        lambda: sorted(a["run_type"] for a in webhook.alerts if a["event"] == "certificate_late") or None,
        120,
        "deadline alerts",
    )
    assert late == ["manual", "scheduled"]

    # The certificates page's JSON on this API server: every certificate, issued by its run.
    body = cluster.api("GET", "/greencert/certificates", params={"limit": 100})
    # Rows checked against the registry's signed metadata by the API server (never read from index.json),
    # all of them issued by this cluster's key: none unverified.
    assert body["total"] == 4 * len(SUBSET) and body["source"] == "verified"
    # (the January backfill periods have expired by now; a status is still a checked one).
    statuses = {c["status"] for c in body["certificates"]}
    assert statuses <= {"valid", "superseded", "expired"}, [c["verification"] for c in body["certificates"]]
    run_ids = {r["dag_run_id"] for r in runs if r["state"] == "success"}
    assert {c["issued_by"]["run_id"] for c in body["certificates"]} == run_ids


def test_a_backfill_rerun_replaces_never_duplicates(deployment) -> None:
    cluster, _, base, _ = deployment
    registry = base / "registry"
    before = certificate_files(registry)
    assert before, "runs after the first test"

    def first_backfill_closed() -> bool:
        # The scheduler marks a backfill completed a loop after its last run ends; until then
        # Airflow refuses a second backfill of the same DAG.
        cluster.check_running()
        backfills = cluster.api("GET", "/api/v2/backfills", params={"dag_id": "green_certification"})["backfills"]
        return all(b["completed_at"] for b in backfills)

    wait_for(first_backfill_closed, 300, "the first backfill to be marked completed", interval=5)
    cluster.cli(
        "backfill",
        "create",
        "--dag-id",
        "green_certification",
        "--from-date",
        "2026-01-02",
        "--to-date",
        "2026-01-02",
        "--reprocess-behavior",
        "completed",
    )

    def rerun_done() -> bool:
        cluster.check_running()
        backfills = cluster.api("GET", "/api/v2/backfills", params={"dag_id": "green_certification"})[
            "backfills"
        ]
        return len(backfills) == 2 and all(b["completed_at"] for b in backfills)

    wait_for(rerun_done, 900, "the re-run backfill", interval=10)
    rerun = [
        r for r in run_state(cluster, "green_certification") if r["logical_date"].startswith("2026-01-02")
    ]
    assert [r["state"] for r in rerun] == ["success"]  # the period's run was re-run in place
    tis = [
        t for t in task_instances(cluster, "green_certification") if t["dag_run_id"] == rerun[0]["dag_run_id"]
    ]
    publishes = [t for t in tis if t["task_id"].endswith(".publish")]
    assert len(publishes) == len(SUBSET) and all(t["try_number"] >= 2 for t in publishes)
    after = certificate_files(registry)
    assert after == before  # same files, same bytes: replaced, not duplicated

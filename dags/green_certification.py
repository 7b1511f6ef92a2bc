"""Green certification: certify each deployment's energy and carbon per million tokens, daily.

One mapped task group per deployment of the fleet config:

    extract -> segments -> validate -> compute -> grade -> publish

``segments`` splits a bundle whose manifest declares segments (a change of serving engine, model or
GPUs inside the period) into one bundle per segment; the later tasks certify each, one certificate
per segment, exactly as ``greencert certify`` does.

Every task body lives in ``greencert.tasks`` (importable, tested on its own);
this file only wires them. Tasks pass file paths through XCom, never frames.
Work is keyed on the data interval, so reruns and backfills replace, never
duplicate. Nothing heavy is imported at parse time.

Operations: ``extract`` is bounded to ``GREENCERT_EXTRACT_CONCURRENCY`` running
instances across all runs (it queries the telemetry source) and retries with
exponential backoff; every task alerts on failure (``greencert.alerts``); when
``GREENCERT_DEADLINE_HOURS`` is set, a Deadline Alert fires when a period's
certificate is not published that many hours after the period ends (opt-in:
``airflow dags test`` of Airflow 3.3.2 crashes on any DAG that has a deadline,
see docs/operations.md); each publish emits an event
on the ``greencert_certificates`` asset with the grade and key figures.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import (
    CronDataIntervalTimetable,
    DeadlineAlert,
    Param,
    SyncCallback,
    dag,
    task,
    task_group,
)

from greencert.alerts import GreenCertAlert, PeriodEndDeadline
from greencert.assets import CERTIFICATES
from greencert.tasks import DEFAULT_CONFIG

# Deployment-level knobs, read at parse time (environment only: no I/O).
EXTRACT_CONCURRENCY = int(os.environ.get("GREENCERT_EXTRACT_CONCURRENCY", "4"))
DEADLINE_HOURS = os.environ.get("GREENCERT_DEADLINE_HOURS", "").strip()
CERTIFICATE_LATE = (
    DeadlineAlert(
        reference=PeriodEndDeadline(),
        interval=dt.timedelta(hours=float(DEADLINE_HOURS)),
        callback=SyncCallback(GreenCertAlert, kwargs={"event": "certificate_late"}),
        name="certificate_late",
    )
    if DEADLINE_HOURS
    else None
)


@dag(
    dag_id="green_certification",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    tags=["greencert"],
    default_args={"on_failure_callback": GreenCertAlert("task_failed")},
    deadline=CERTIFICATE_LATE,
    params={
        "config_path": Param(
            DEFAULT_CONFIG,
            type="string",
            minLength=1,
            pattern=r"\.ya?ml$",
            title="Fleet config",
            description="Fleet config YAML (path on the workers)",
        ),
        "deployments": Param(
            [],
            type="array",
            uniqueItems=True,
            items={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            title="Deployments",
            description="Deployments to certify, one per line (empty: all in the config)",
        ),
        "registry": Param(
            "",
            type="string",
            pattern="^(/.*)?$",
            title="Output registry",
            description="Publish into this absolute folder instead of the config's registry (empty: config)",
        ),
    },
    doc_md=__doc__,
)
def green_certification():
    @task
    def deployments(params=None) -> list[str]:
        from greencert.tasks import list_deployments

        return list_deployments(params["config_path"], params["deployments"] or None)

    @task_group
    def certify_deployment(deployment: str):
        @task(
            retries=3,
            retry_delay=dt.timedelta(seconds=30),
            retry_exponential_backoff=True,
            max_retry_delay=dt.timedelta(minutes=10),
            max_active_tis_per_dag=EXTRACT_CONCURRENCY,
            multiple_outputs=False,
        )
        def extract(deployment: str, params=None, data_interval_start=None, data_interval_end=None) -> dict:
            from greencert.tasks import extract, work_folder

            config = params["config_path"]
            return {
                "bundle": extract(config, deployment, data_interval_start, data_interval_end),
                "work": work_folder(config, deployment, data_interval_start, data_interval_end),
            }

        @task(multiple_outputs=False)
        def segments(paths: dict, deployment: str, params=None) -> list[dict]:
            from greencert.tasks import segment_bundles

            return segment_bundles(params["config_path"], deployment, paths["bundle"], paths["work"])

        # From here on each task handles the list of bundles `segments` returned: the bundle itself, or one
        # per declared segment (one certificate each), with the same stage functions as the CLI.
        @task(multiple_outputs=False)
        def validate(items: list[dict], params=None) -> list[dict]:
            from greencert.tasks import validate

            config = params["config_path"]
            return [{**p, "validation": validate(config, p["bundle"], p["work"])} for p in items]

        @task(multiple_outputs=False)
        def compute(items: list[dict], params=None) -> list[dict]:
            from greencert.tasks import compute

            config = params["config_path"]
            return [{**p, "figures": compute(config, p["bundle"], p["validation"], p["work"])} for p in items]

        @task(multiple_outputs=False)
        def grade(items: list[dict], params=None) -> list[dict]:
            from greencert.tasks import grade

            config = params["config_path"]
            return [{**p, "graded": grade(config, p["figures"], p["work"])} for p in items]

        @task(outlets=[CERTIFICATES], multiple_outputs=False)
        def publish(items: list[dict], params=None, outlet_events=None) -> list[str]:
            from greencert.tasks import certificate_event, publish, registry_for

            registry = registry_for(params["config_path"], params["registry"] or None)
            paths = [
                publish(params["config_path"], p["graded"], p["bundle"], p["validation"], registry)
                for p in items
            ]
            # The asset event carries the grade and key figures (shown in the UI's asset view); with
            # segments, the last segment's figures and every certificate id.
            events = [certificate_event(path, registry) for path in paths]
            outlet_events[CERTIFICATES].extra.update(
                {**events[-1], "certificate_ids": [e["certificate_id"] for e in events]}
            )
            return paths

        publish(grade(compute(validate(segments(extract(deployment), deployment)))))

    certify_deployment.expand(deployment=deployments())


green_certification()

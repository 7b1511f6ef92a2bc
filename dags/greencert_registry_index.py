"""Rebuild the registry index whenever certificates are published.

Scheduled on the ``greencert_certificates`` asset: each publish task of the
certification DAG emits an event on it, naming the registry it wrote to. One
run of this DAG handles every event queued since the previous run and rebuilds
the index (``index.json`` + ``index.html``) of each registry named, so the
index never disagrees with the certificate files. It also runs hourly without
events: with the issuer key, a rebuild re-signs the registry's status (the TUF
timestamp, valid 24 h), so auditors always find a fresh one (docs/trust.md). A
run without events rebuilds the configured registry (``$GREENCERT_REGISTRY`` or
the fleet config's).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from greencert.alerts import GreenCertAlert
from greencert.assets import CERTIFICATES


@dag(
    dag_id="greencert_registry_index",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("17 * * * *", timezone="UTC"), assets=[CERTIFICATES]
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["greencert"],
    default_args={"on_failure_callback": GreenCertAlert("task_failed")},
    doc_md=__doc__,
)
def greencert_registry_index():
    @task(retries=2, retry_delay=dt.timedelta(seconds=10))
    def rebuild_index(triggering_asset_events=None) -> list[str]:
        from greencert.tasks import rebuild_registry_indexes
        from greencert.webui import registry_root

        registries = {
            event.extra["registry"]
            for events in (triggering_asset_events or {}).values()
            for event in events
            if event.extra.get("registry")
        }
        return rebuild_registry_indexes(sorted(registries) or [str(registry_root())])

    rebuild_index()


greencert_registry_index()

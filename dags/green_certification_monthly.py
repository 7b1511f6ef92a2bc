"""Monthly fleet certification: one mapped task per day, then each deployment's month certificate.

    days -> certify_day (mapped: 28-31 fleet-days) -> certify_month

Each ``certify_day`` certifies one fleet-day (every deployment bundle of
``<fleet_root>/<YYYY-MM-DD>/``; GX validates every row through stacked
per-device statistics; daily certificates are signed and published) and saves
each deployment's partial: hourly energy per device, token increases, grid
intensity (``greencert.compute.partials``). ``certify_month`` adds the partials
up into each deployment's certificate for the month without reading a sample
again, so the month's figures are exactly the sum of its days.

A fleet-day task keeps about one bundle's samples in memory (well under
2.5 GB for a 1,000-node fleet, docs/performance.md); ``max_active_tis_per_dagrun``
bounds how many run side by side. Task bodies live in ``greencert.month``; this
file only wires them and imports nothing heavy. XCom carries paths only.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from greencert.alerts import GreenCertAlert

BUILD = Path(__file__).resolve().parents[1] / "build" / "fleet"
DAYS_IN_PARALLEL = int(os.environ.get("GREENCERT_FLEET_DAYS_IN_PARALLEL", "1"))


@dag(
    dag_id="green_certification_monthly",
    schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["greencert", "fleet"],
    default_args={"on_failure_callback": GreenCertAlert("task_failed")},
    params={
        "fleet_root": Param(str(BUILD / "days"), type="string", minLength=1, title="Fleet-day folders"),
        "registry": Param(str(BUILD / "registry"), type="string", minLength=1, title="Registry"),
        "work_dir": Param(str(BUILD / "work"), type="string", minLength=1, title="Work folder"),
        "partials_dir": Param(str(BUILD / "partials"), type="string", minLength=1, title="Daily partials"),
        "scheme": Param("", type="string", title="Grading scheme YAML (empty: the packaged default)"),
        "simulate_scale": Param(
            None,
            type=["null", "number"],
            title="Simulate missing days at this fleet scale (1 = 1,000 nodes; empty: never)",
        ),
    },
    doc_md=__doc__,
)
def green_certification_monthly():
    @task
    def days(data_interval_start=None, data_interval_end=None) -> list[str]:
        from greencert.month import days_of

        return days_of(data_interval_start, data_interval_end)

    @task(
        multiple_outputs=False,
        max_active_tis_per_dagrun=DAYS_IN_PARALLEL,
        retries=2,
        retry_delay=dt.timedelta(minutes=1),
    )
    def certify_day(day: str, params=None) -> dict[str, str]:
        from greencert.month import certify_day_task

        return certify_day_task(
            params["fleet_root"],
            day,
            params["registry"],
            params["work_dir"],
            params["partials_dir"],
            params["scheme"] or None,
            params["simulate_scale"],
        )

    @task(multiple_outputs=False)
    def certify_month(partials: list, params=None, data_interval_start=None, data_interval_end=None) -> dict:
        from greencert.month import certify_month_task

        # ``partials`` (one dict per day) only orders this task after the days; the files are the input.
        return certify_month_task(
            params["partials_dir"],
            data_interval_start,
            data_interval_end,
            params["registry"],
            params["work_dir"],
            params["scheme"] or None,
        )

    certify_month(certify_day.expand(day=days()))


green_certification_monthly()

"""Green certification: certify each deployment's energy and carbon per million tokens, daily.

One mapped task group per deployment of the fleet config:

    extract -> validate -> compute -> grade -> publish

Every task body lives in ``greencert.tasks`` (importable, tested on its own);
this file only wires them. Tasks pass file paths through XCom, never frames.
Work is keyed on the data interval, so reruns and backfills replace, never
duplicate. Nothing heavy is imported at parse time.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task, task_group
from greencert.tasks import DEFAULT_CONFIG


@dag(
    dag_id="green_certification",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    tags=["greencert"],
    params={
        "config_path": Param(DEFAULT_CONFIG, type="string", minLength=1, description="Fleet config YAML"),
        "deployments": Param(
            [],
            type="array",
            items={"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            description="Deployments to certify (empty: all in the config)",
        ),
        "registry": Param(
            "", type="string", description="Publish into this folder instead of the config's registry"
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
        def validate(paths: dict, params=None) -> dict:
            from greencert.tasks import validate

            return {**paths, "validation": validate(params["config_path"], paths["bundle"], paths["work"])}

        @task(multiple_outputs=False)
        def compute(paths: dict, params=None) -> dict:
            from greencert.tasks import compute

            return {
                **paths,
                "figures": compute(
                    params["config_path"], paths["bundle"], paths["validation"], paths["work"]
                ),
            }

        @task(multiple_outputs=False)
        def grade(paths: dict, params=None) -> dict:
            from greencert.tasks import grade

            return {**paths, "graded": grade(params["config_path"], paths["figures"], paths["work"])}

        @task(multiple_outputs=False)
        def publish(paths: dict, params=None) -> str:
            from greencert.tasks import publish

            return publish(
                params["config_path"],
                paths["graded"],
                paths["bundle"],
                paths["validation"],
                params["registry"] or None,
            )

        publish(grade(compute(validate(extract(deployment)))))

    certify_deployment.expand(deployment=deployments())


green_certification()

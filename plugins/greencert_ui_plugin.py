"""Airflow plugin: the "Green certificates" page in the Airflow UI, and the period-end deadline reference.

* ``fastapi_apps``: the certificates page and JSON API (``greencert.webui``), mounted by the API
  server at ``/greencert``; every route checks Airflow's authentication itself (plugin apps are not
  covered by the core API's auth).
* ``external_views``: the page's entry in the UI navigation (shown in an iframe at
  ``/plugin/green-certificates``). The href is relative so it follows ``[api] base_url``.
* ``deadline_references``: ``PeriodEndDeadline``, so the scheduler can evaluate the DAG's Deadline
  Alert ("certificate due N hours after its period ends").
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from greencert.alerts import PeriodEndDeadline
from greencert.webui import MOUNT_PREFIX, create_app


class GreenCertUIPlugin(AirflowPlugin):
    name = "greencert"
    fastapi_apps = [{"app": create_app(), "url_prefix": MOUNT_PREFIX, "name": "GreenCert certificates"}]
    external_views = [
        {
            "name": "Green certificates",
            "href": MOUNT_PREFIX.lstrip("/") + "/",
            "url_route": "green-certificates",
            "destination": "nav",
            "category": "browse",
        }
    ]
    deadline_references = [PeriodEndDeadline]

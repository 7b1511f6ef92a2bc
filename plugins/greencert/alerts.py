"""Operational alerts: a failed certification task, or a period whose certificate is late.

``GreenCertAlert`` is an Airflow notifier. It is used two ways:

* as ``on_failure_callback`` of every certification task (runs in the worker, after the last retry);
* as the callback of the DAG's Deadline Alert (``SyncCallback``, run by the executor when a period's
  certificate is not published ``GREENCERT_DEADLINE_HOURS`` after the period ends).

Every alert is written to the log (logger ``greencert.alerts``, level ERROR) as one line a person can
act on. Delivery beyond the log is configured by environment, read when the alert fires (so workers
can be reconfigured without re-parsing DAGs):

* ``GREENCERT_ALERT_WEBHOOK``: URL that receives the alert as a JSON POST;
* ``GREENCERT_ALERT_EMAIL``: comma-separated recipients, sent through the SMTP provider's
  ``SmtpNotifier`` with connection ``GREENCERT_ALERT_SMTP_CONN_ID`` (default ``smtp_default``) and
  sender ``GREENCERT_ALERT_EMAIL_FROM`` (else the connection's ``from_email``).

``PeriodEndDeadline`` is the deadline reference "end of the run's data interval": the certificate of a
period is due a fixed time after that period ends, whether the run is scheduled, a backfill or manual.
It is registered with Airflow by the plugin in ``plugins/greencert_ui_plugin.py``.

Only light imports at module level: DAG files import this module at parse time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import PurePath
from typing import Any, cast

# airflow/sdk/__init__.pyi omits BaseDeadlineReference, which the package exports at run time (__all__).
from airflow.sdk import BaseDeadlineReference, BaseNotifier, Context  # type: ignore[attr-defined]

from greencert.times import stamp

log = logging.getLogger("greencert.alerts")

WEBHOOK_ENV = "GREENCERT_ALERT_WEBHOOK"
EMAIL_ENV = "GREENCERT_ALERT_EMAIL"
EMAIL_FROM_ENV = "GREENCERT_ALERT_EMAIL_FROM"
SMTP_CONN_ENV = "GREENCERT_ALERT_SMTP_CONN_ID"
WEBHOOK_TIMEOUT_SECONDS = 10.0


class PeriodEndDeadline(BaseDeadlineReference):
    """Deadline reference: the end of the DAG run's data interval (the certified period).

    Evaluated by the scheduler when a run is created; ``DeadlineAlert.interval`` is
    added to it. Uses the core model lazily (the SDK class is imported at DAG parse time).
    """

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        return session.scalar(
            select(DagRun.data_interval_end).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return stamp(value)
    return str(value)


def _deployment_of(task: Any) -> str | None:
    """Best effort: the deployment a mapped certification task worked on (from its rendered arguments)."""
    op_kwargs = getattr(task, "op_kwargs", None) or {}
    if isinstance(op_kwargs.get("deployment"), str):
        return op_kwargs["deployment"]
    paths = op_kwargs.get("paths")
    if isinstance(paths, dict) and isinstance(paths.get("bundle"), str):
        # Bundles live in <work>/bundles/<deployment>/<interval>.
        parts = PurePath(paths["bundle"]).parts
        if len(parts) >= 2:
            return parts[-2]
    return None


def describe(event: str, context: Any) -> dict[str, Any]:
    """The alert as a flat JSON-able record, from a task-failure or a deadline-miss context."""
    alert: dict[str, Any] = {"source": "greencert", "event": event}
    if event == "certificate_late":
        # Deadline callbacks get a plain dict: the DAG run as the REST API shows it, and the deadline.
        run = context.get("dag_run") or {}
        deadline = context.get("deadline") or {}
        alert.update(
            dag_id=run.get("dag_id"),
            run_id=run.get("dag_run_id") or run.get("run_id"),
            period_start=_text(run.get("data_interval_start")),
            period_end=_text(run.get("data_interval_end")),
            run_state=run.get("state"),
            run_type=run.get("run_type"),
            deadline=_text(deadline.get("deadline_time")),
        )
        alert["message"] = (
            f"GreenCert: certificate for period {alert['period_start']} .. {alert['period_end']} "
            f"is late: DAG {alert['dag_id']} run {alert['run_id']} had not finished by "
            f"{alert['deadline']} (state {alert['run_state']})"
        )
        return alert
    ti = context.get("ti") or context.get("task_instance")
    exception = context.get("exception")
    alert.update(
        dag_id=getattr(ti, "dag_id", None),
        run_id=getattr(ti, "run_id", None),
        task_id=getattr(ti, "task_id", None),
        map_index=getattr(ti, "map_index", None),
        try_number=getattr(ti, "try_number", None),
        deployment=_deployment_of(context.get("task")),
        period_start=_text(context.get("data_interval_start")),
        period_end=_text(context.get("data_interval_end")),
        error=f"{type(exception).__name__}: {exception}" if exception is not None else None,
    )
    where = (
        alert["task_id"] if alert["map_index"] in (None, -1) else f"{alert['task_id']}[{alert['map_index']}]"
    )
    alert["message"] = (
        f"GreenCert: task {where} failed for deployment {alert['deployment'] or '?'} and period "
        f"{alert['period_start']} .. {alert['period_end']} (DAG {alert['dag_id']} run {alert['run_id']}, "
        f"try {alert['try_number']}): {alert['error']}"
    )
    return alert


class GreenCertAlert(BaseNotifier):
    """Notifier: log the alert, then post it to the webhook and e-mail it when those are configured."""

    def __init__(self, event: str = "task_failed", context: Any = None) -> None:
        super().__init__(context=context)
        if event not in ("task_failed", "certificate_late"):
            raise ValueError(f"unknown GreenCert alert event {event!r}")
        self.event = event

    def notify(self, context: Any) -> None:
        alert = describe(self.event, context)
        if alert.get("run_type") == "backfill":
            # A backfill certifies past periods: late by construction, so it is logged, not sent.
            log.warning("%s (backfill run: not delivered)", alert["message"])
            return
        log.error("%s", alert["message"])
        errors: list[str] = []
        if webhook := os.environ.get(WEBHOOK_ENV, "").strip():
            try:
                post_webhook(webhook, alert)
            except Exception as exc:  # a broken webhook must not hide the e-mail, nor the log line
                errors.append(f"webhook {webhook}: {exc}")
        if recipients := [r.strip() for r in os.environ.get(EMAIL_ENV, "").split(",") if r.strip()]:
            try:
                send_email(recipients, alert, context)
            except Exception as exc:
                errors.append(f"e-mail to {', '.join(recipients)}: {exc}")
        for problem in errors:
            log.error("GreenCert alert delivery failed: %s", problem)


def post_webhook(url: str, alert: dict[str, Any]) -> None:
    import requests

    response = requests.post(
        url,
        data=json.dumps(alert, sort_keys=True),
        headers={"Content-Type": "application/json"},
        timeout=WEBHOOK_TIMEOUT_SECONDS,
    )
    response.raise_for_status()
    log.info("alert posted to webhook %s (HTTP %d)", url, response.status_code)


def send_email(recipients: list[str], alert: dict[str, Any], context: Any) -> None:
    from html import escape

    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    rows = "".join(
        f"<tr><th align='left'>{escape(k)}</th><td>{escape(str(v))}</td></tr>"
        for k, v in alert.items()
        if k != "message" and v is not None
    )
    what = "certificate late" if alert["event"] == "certificate_late" else "task failed"
    subject = f"[GreenCert] {what}: {alert.get('deployment') or alert['dag_id']} {alert['period_start']}"
    notifier = SmtpNotifier(
        to=recipients,
        from_email=os.environ.get(EMAIL_FROM_ENV) or None,
        smtp_conn_id=os.environ.get(SMTP_CONN_ENV) or "smtp_default",
        subject=subject,
        html_content=f"<p>{escape(alert['message'])}</p><table>{rows}</table>",
    )
    # notify() directly, not notifier(context): the subject and body are final text, and error
    # messages may contain "{{" that Jinja rendering would choke on.
    # A deadline callback's context is a plain dict with the task context's keys.
    notifier.notify(cast(Context, context) if isinstance(context, dict) else Context())
    log.info("alert e-mailed to %s", ", ".join(recipients))

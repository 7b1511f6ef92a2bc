"""Alerts: the message names task, deployment, period and error; delivery to a real local webhook
server and a real local SMTP server; backfill deadline misses are logged, not sent."""

from __future__ import annotations

import asyncore
import email
import json
import logging
import smtpd
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from greencert.alerts import GreenCertAlert, describe
from greencert.errors import ConfigError


@pytest.fixture
def webhook():
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(
                {"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)}
            )
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/greencert", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def smtp_server():
    messages: list[tuple[str, list[str], str]] = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            messages.append((mailfrom, rcpttos, data))

    server = Server(("127.0.0.1", 0), None, decode_data=True)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            asyncore.loop(timeout=0.05, count=1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.socket.getsockname()[1], messages
    stop.set()
    thread.join(timeout=5)
    server.close()


def failure_context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="green_certification",
        run_id="scheduled__2026-01-02T00:00:00+00:00",
        task_id="certify_deployment.extract",
        map_index=2,
        try_number=4,
    )
    task = SimpleNamespace(op_kwargs={"deployment": "code-32b"})
    import datetime as dt

    return {
        "ti": ti,
        "task": task,
        "exception": ConfigError("bundle folder /data/x does not exist", "fleet.yaml: deployment code-32b"),
        "data_interval_start": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        "data_interval_end": dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    }


def deadline_context(run_type: str = "scheduled") -> dict[str, Any]:
    # The shape the scheduler hands to deadline callbacks: the run as the REST API shows it.
    return {
        "dag_run": {
            "dag_id": "green_certification",
            "dag_run_id": f"{run_type}__2026-01-02T00:00:00+00:00",
            "data_interval_start": "2026-01-01T00:00:00Z",
            "data_interval_end": "2026-01-02T00:00:00Z",
            "state": "running",
            "run_type": run_type,
        },
        "deadline": {"id": "d1", "deadline_time": "2026-01-02T06:00:00Z"},
    }


def test_failure_alert_names_task_deployment_period_and_error() -> None:
    alert = describe("task_failed", failure_context())
    assert alert["deployment"] == "code-32b"
    assert alert["period_start"] == "2026-01-01T00:00:00Z" and alert["period_end"] == "2026-01-02T00:00:00Z"
    msg = alert["message"]
    assert "certify_deployment.extract[2]" in msg
    assert "code-32b" in msg and "try 4" in msg
    assert "bundle folder /data/x does not exist" in msg


def test_deployment_is_found_from_the_bundle_path_of_later_tasks() -> None:
    ctx = failure_context()
    ctx["task"] = SimpleNamespace(
        op_kwargs={"paths": {"bundle": "/w/bundles/chat-70b/20260101T0000Z_20260102T0000Z"}}
    )
    assert describe("task_failed", ctx)["deployment"] == "chat-70b"


def test_deadline_alert_names_period_run_and_deadline() -> None:
    alert = describe("certificate_late", deadline_context())
    assert alert["run_id"] == "scheduled__2026-01-02T00:00:00+00:00"
    assert alert["deadline"] == "2026-01-02T06:00:00Z"
    assert "2026-01-01T00:00:00Z .. 2026-01-02T00:00:00Z is late" in alert["message"]


def test_unknown_event_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown GreenCert alert event"):
        GreenCertAlert("something_else")


def test_alert_is_logged_and_posted_to_the_webhook(webhook, monkeypatch, caplog) -> None:
    url, received = webhook
    monkeypatch.setenv("GREENCERT_ALERT_WEBHOOK", url)
    monkeypatch.delenv("GREENCERT_ALERT_EMAIL", raising=False)
    with caplog.at_level(logging.ERROR, logger="greencert.alerts"):
        GreenCertAlert("task_failed").notify(failure_context())
    assert len(received) == 1
    assert received[0]["path"] == "/hooks/greencert" and received[0]["type"] == "application/json"
    body = received[0]["body"]
    assert body["event"] == "task_failed" and body["deployment"] == "code-32b"
    assert body["message"] in caplog.text


def test_alert_is_emailed_through_the_smtp_notifier(smtp_server, monkeypatch) -> None:
    port, messages = smtp_server
    monkeypatch.setenv(
        "AIRFLOW_CONN_GREENCERT_TEST_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "greencert@example.org"},
            }
        ),
    )
    monkeypatch.setenv("GREENCERT_ALERT_EMAIL", "ops@example.org, oncall@example.org")
    monkeypatch.setenv("GREENCERT_ALERT_SMTP_CONN_ID", "greencert_test_smtp")
    monkeypatch.delenv("GREENCERT_ALERT_WEBHOOK", raising=False)
    GreenCertAlert("certificate_late").notify(deadline_context())
    threading.Event().wait(0.5)  # the server thread hands the message over asynchronously
    assert len(messages) == 1
    sender, recipients, data = messages[0]
    assert sender == "greencert@example.org"
    assert recipients == ["ops@example.org", "oncall@example.org"]
    mail = email.message_from_string(data)
    assert mail["Subject"] == "[GreenCert] certificate late: green_certification 2026-01-01T00:00:00Z"
    html = (
        next(p for p in mail.walk() if p.get_content_type() == "text/html").get_payload(decode=True).decode()
    )
    assert "is late" in html and "scheduled__2026-01-02T00:00:00+00:00" in html


def test_a_broken_webhook_is_logged_and_does_not_stop_the_email(smtp_server, monkeypatch, caplog) -> None:
    port, messages = smtp_server
    monkeypatch.setenv(
        "AIRFLOW_CONN_GREENCERT_TEST_SMTP",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_ssl": True, "disable_tls": True},
            }
        ),
    )
    monkeypatch.setenv("GREENCERT_ALERT_EMAIL_FROM", "alerts@example.org")
    monkeypatch.setenv("GREENCERT_ALERT_EMAIL", "ops@example.org")
    monkeypatch.setenv("GREENCERT_ALERT_SMTP_CONN_ID", "greencert_test_smtp")
    monkeypatch.setenv("GREENCERT_ALERT_WEBHOOK", "http://127.0.0.1:9/nothing-listens-here")
    with caplog.at_level(logging.ERROR, logger="greencert.alerts"):
        GreenCertAlert("task_failed").notify(failure_context())
    threading.Event().wait(0.5)
    assert len(messages) == 1 and messages[0][0] == "alerts@example.org"
    assert "alert delivery failed: webhook http://127.0.0.1:9/nothing-listens-here" in caplog.text


def test_backfill_deadline_misses_are_logged_not_sent(webhook, monkeypatch, caplog) -> None:
    url, received = webhook
    monkeypatch.setenv("GREENCERT_ALERT_WEBHOOK", url)
    with caplog.at_level(logging.WARNING, logger="greencert.alerts"):
        GreenCertAlert("certificate_late").notify(deadline_context("backfill"))
    assert received == []
    assert "backfill run: not delivered" in caplog.text

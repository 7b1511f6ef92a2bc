"""``[core] hostname_callable`` for test workers that share one machine.

Two Celery workers started by a test run on the same host, so the host name cannot tell
which one ran a task. Each worker process is started with ``GREENCERT_WORKER_NAME``; the
task instances it runs record that name as their hostname, as separate machines would.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("GREENCERT_WORKER_NAME") or socket.getfqdn()

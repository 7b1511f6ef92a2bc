"""A real Prometheus server for tests: OpenMetrics backfill with promtool, then serve on 127.0.0.1.

Pitfalls handled here (see docs/prometheus.md): promtool wants timestamps in seconds and a final
``# EOF``; a counter family is declared without its ``_total`` suffix, and a counter whose name has
no such suffix (DCGM's energy counter) is declared ``unknown`` so it keeps its real name; retention
is measured from the newest block, so the server runs with a very long retention.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


@dataclass
class Sample:
    """One series to backfill: metric name, labels, times (Unix seconds) and values."""

    metric: str
    labels: dict[str, str]
    t: np.ndarray
    v: np.ndarray
    family_type: str = "gauge"  # gauge | counter | unknown


def _family(s: Sample) -> str:
    if s.family_type == "counter":
        assert s.metric.endswith("_total"), s.metric
        return s.metric.removesuffix("_total")
    return s.metric


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_openmetrics(series: list[Sample], path: Path) -> Path:
    families: dict[str, list[Sample]] = {}
    for s in series:
        families.setdefault(_family(s), []).append(s)
    with open(path, "w", encoding="utf-8") as out:
        for family, members in families.items():
            out.write(f"# TYPE {family} {members[0].family_type}\n")
            for s in members:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in s.labels.items())
                for t, v in zip(s.t.tolist(), s.v.tolist(), strict=True):
                    out.write(f"{s.metric}{{{labels}}} {v!r} {t!r}\n")
        out.write("# EOF\n")
    return path


def create_blocks(openmetrics: Path, blocks: Path) -> Path:
    blocks.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(openmetrics), str(blocks)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrometheusServer:
    """``prometheus`` on 127.0.0.1 with its own data folder (a copy of the given blocks)."""

    def __init__(self, blocks: Path, workdir: Path) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        shutil.copytree(blocks, self.data)
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("prometheus did not become ready within 60 s")

    def connection_env(self, **extra: object) -> str:
        """``AIRFLOW_CONN_*`` value (Airflow's JSON connection format) pointing at this server."""
        import json

        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "extra": dict(extra)})

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

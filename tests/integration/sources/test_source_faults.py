"""Telemetry and grid sources down, slow, failing then recovering, or answering garbage.

The real Prometheus server (and the grid-API stand-in in the providers' documented shapes) sit
behind a fault-injecting HTTP proxy on 127.0.0.1 that, request by request, forwards, answers
500, stalls past the client's timeout, or answers something that is not the documented JSON.
Expected: transient faults are retried and the result is identical to a clean pull; a source
that stays down or answers garbage ends in a SourceError naming the source and what went wrong.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from carbon_api_server import EM_KEY, WT_PASSWORD, WT_USER, ApiStandIn
from prometheus_server import PrometheusServer, Sample, create_blocks, write_openmetrics

from greencert.errors import SourceError

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
GARBAGE = {
    "html": b"<html><body>502 Bad Gateway</body></html>",
    "truncated": b'{"status":"success","data":{"resultType":"matrix","result":[{"metric":',
    "binary": bytes(range(256)),
}
# Valid JSON of the wrong shape: an instant vector where a range query must return a matrix.
ANSWERS = {**GARBAGE, "vector": b'{"status":"success","data":{"resultType":"vector","result":[]}}'}


class FaultProxy:
    """Reverse proxy: the n-th request gets ``plan[n]`` (default: forwarded untouched)."""

    def __init__(self, upstream: str, plan: dict[int, str] | None = None, stall: float = 1.0) -> None:
        self.upstream, self.plan, self.stall, self.count = upstream, dict(plan or {}), stall, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                proxy.count += 1
                action = proxy.plan.get(proxy.count, "forward")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if action == "500":
                    status, payload = 500, b'{"status":"error","errorType":"internal","error":"boom"}'
                elif action in ANSWERS:
                    status, payload = 200, ANSWERS[action]
                else:
                    if action == "stall":
                        time.sleep(proxy.stall)  # past the client's timeout: it has given up
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                    }
                    up = requests.request(
                        self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=30
                    )
                    status, payload = up.status_code, up.content
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve  # noqa: N815 (http.server API)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------- Prometheus

QUERY = 'DCGM_FI_DEV_POWER_USAGE{cluster="faults"}'
START, END, STEP = T0.timestamp(), T0.timestamp() + 3600.0, 15.0


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    root = tmp_path_factory.mktemp("prom")
    t = START + np.arange(0.0, 3600.0 + STEP, STEP)
    series = [
        Sample("DCGM_FI_DEV_POWER_USAGE", {"gpu": str(g), "cluster": "faults"}, t, 300.0 + 50.0 * g + t % 97)
        for g in range(2)
    ]
    blocks = create_blocks(write_openmetrics(series, root / "data.om"), root / "blocks")
    server = PrometheusServer(blocks, root / "server")
    yield server
    server.stop()


def prometheus_hook(monkeypatch: pytest.MonkeyPatch, conn_id: str, port: int, timeout: float = 5.0):
    from greencert.sources.prometheus_hook import PrometheusHook

    conn = {"conn_type": "http", "host": "127.0.0.1", "port": port}
    conn["extra"] = {"retries": 2, "backoff": 0.01, "timeout": timeout}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return PrometheusHook(conn_id)


@pytest.fixture
def clean_answer(prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch) -> list:
    result = prometheus_hook(monkeypatch, "prom_direct", prometheus.port).query_range(QUERY, START, END, STEP)
    assert len(result) == 2 and len(result[0]["values"]) == 241
    return result


def test_prometheus_down_is_a_clear_error_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    hook = prometheus_hook(monkeypatch, "prom_down", port)
    with pytest.raises(SourceError) as err:
        hook.query_range(QUERY, START, END, STEP)
    message = str(err.value)
    assert "failed after 3 attempt(s): ConnectionError" in message
    assert f"Prometheus http://127.0.0.1:{port}" in message and QUERY in message


@pytest.mark.parametrize(
    ("plan", "what"),
    [({1: "500"}, "500 then recovers"), ({1: "stall", 2: "500"}, "too slow, then 500, then recovers")],
)
def test_prometheus_transient_faults_are_retried_and_change_nothing(
    plan: dict[int, str], what: str, prometheus: PrometheusServer, clean_answer: list, monkeypatch
) -> None:
    proxy = FaultProxy(prometheus.url, plan)
    try:
        hook = prometheus_hook(monkeypatch, "prom_flaky", proxy.port, timeout=0.3)
        assert hook.query_range(QUERY, START, END, STEP) == clean_answer
        assert proxy.count == len(plan) + 1
    finally:
        proxy.close()


@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_prometheus_garbage_answer_is_a_clear_error(
    garbage: str, prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultProxy(prometheus.url, {1: garbage})
    try:
        hook = prometheus_hook(monkeypatch, "prom_garbage", proxy.port)
        with pytest.raises(SourceError) as err:
            hook.query_range(QUERY, START, END, STEP)
    finally:
        proxy.close()
    message = str(err.value)
    assert "the answer is not JSON (HTTP 200" in message
    assert QUERY in message and f"127.0.0.1:{proxy.port}" in message


def test_prometheus_json_of_the_wrong_shape_is_a_clear_error(
    prometheus: PrometheusServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = FaultProxy(prometheus.url, {1: "vector"})
    try:
        hook = prometheus_hook(monkeypatch, "prom_shape", proxy.port)
        with pytest.raises(SourceError, match="expected a matrix result"):
            hook.query_range(QUERY, START, END, STEP)
    finally:
        proxy.close()


# ---------------------------------------------------------------- grid-intensity APIs


class Sleeps(list):
    """The clients' backoff clock: records the waits instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(scope="module")
def grid_api() -> Iterator[ApiStandIn]:
    server = ApiStandIn().start()
    yield server
    server.stop()


def electricity_maps(url: str, **http):
    from greencert.carbon.grid_sources import Credentials, ElectricityMaps

    return ElectricityMaps(Credentials(url, None, EM_KEY), sleep=Sleeps(), max_retries=2, **http)


def watttime(url: str, **http):
    from greencert.carbon.grid_sources import Credentials, WattTime

    return WattTime(Credentials(url, WT_USER, WT_PASSWORD), sleep=Sleeps(), max_retries=2, **http)


DAY = (T0, T0 + dt.timedelta(hours=6))


def fetch(client_name: str, url: str, **http):
    if client_name == "electricity_maps":
        return electricity_maps(url, **http).past_range("DE", *DAY)
    return watttime(url, **http).historical("CAISO_NORTH", *DAY)


CLIENTS = ["electricity_maps", "watttime"]


@pytest.mark.parametrize("client", CLIENTS)
def test_grid_api_down_is_a_clear_error_without_secrets(client: str) -> None:
    with pytest.raises(SourceError) as err:
        fetch(client, f"http://127.0.0.1:{closed_port()}", timeout=2.0)
    text = f"{err.value}"
    assert "no response after 3 attempt(s) (ConnectionError)" in text
    assert ("Electricity Maps" if client == "electricity_maps" else "WattTime") in text
    assert EM_KEY not in text and WT_PASSWORD not in text


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("plan", [{1: "500"}, {1: "stall"}, {1: "stall", 2: "500"}], ids=str)
def test_grid_api_transient_faults_are_retried_and_change_nothing(
    client: str, plan: dict[int, str], grid_api: ApiStandIn
) -> None:
    clean = fetch(client, grid_api.url)
    proxy = FaultProxy(grid_api.url, plan)
    try:
        flaky = fetch(client, proxy.url, timeout=0.3)
    finally:
        proxy.close()
    np.testing.assert_array_equal(flaky.values, clean.values)
    np.testing.assert_array_equal(flaky.hours, clean.hours)
    assert flaky.unit == clean.unit
    assert flaky.provenance["retries"] == len(plan)


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("garbage", sorted(GARBAGE))
def test_grid_api_garbage_answer_is_a_clear_error(client: str, garbage: str, grid_api: ApiStandIn) -> None:
    # For WattTime the first request is the login: garbage there and on the data request both count.
    for request in (1, 2) if client == "watttime" else (1,):
        proxy = FaultProxy(grid_api.url, {request: garbage})
        try:
            with pytest.raises(SourceError) as err:
                fetch(client, proxy.url)
        finally:
            proxy.close()
        text = f"{err.value}"
        expected = (
            "WattTime login failed: HTTP 200"
            if client == "watttime" and request == 1
            else "response is not the documented shape"
        )
        assert expected in text, text
        assert EM_KEY not in text and WT_PASSWORD not in text


def test_fault_proxy_forwards_untouched(grid_api: ApiStandIn) -> None:
    # The proxy itself changes nothing when told to forward (so the faults above are the only change).
    proxy = FaultProxy(grid_api.url)
    try:
        direct = requests.get(f"{grid_api.url}/login", auth=(WT_USER, WT_PASSWORD), timeout=5)
        via = requests.get(f"{proxy.url}/login", auth=(WT_USER, WT_PASSWORD), timeout=5)
    finally:
        proxy.close()
    assert direct.status_code == via.status_code == 200
    assert set(direct.json()) == set(via.json()) == {"token"}

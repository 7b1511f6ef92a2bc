"""A local HTTP server (127.0.0.1) answering like Electricity Maps API v3 and WattTime API v3.

Response shapes follow the providers' documentation:

* Electricity Maps ``GET /v3/carbon-intensity/past-range?zone&start&end`` with header
  ``auth-token``: ``{"zone", "temporalGranularity", "data": [{"zone", "carbonIntensity",
  "datetime", "updatedAt", "createdAt", "emissionFactorType", "isEstimated",
  "estimationMethod"}]}`` (gCO2eq/kWh); errors as ``{"status": "error", "message"}``.
* WattTime ``GET /login`` (HTTP basic auth) -> ``{"token"}``; ``GET /v3/historical?region&
  start&end&signal_type`` with ``Authorization: Bearer`` -> ``{"data": [{"point_time",
  "value"}], "meta": {"region", "signal_type", "units": "lbs_co2_per_mwh",
  "data_point_period_seconds": 300, "model": {"date"}, "warnings": []}}``; start and end inclusive.

Faults are switched on per test: 429 with Retry-After, 5xx, wrong credentials,
unknown zones, missing hours or points, token expiry.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

EM_KEY = "em-test-key-5f1c9a"
WT_USER = "greencert-user"
WT_PASSWORD = "wt-test-pass-8d2e"


def em_intensity(t: float) -> float:
    """The stand-in's hourly carbon intensity: 200 + 10 x hour of day (gCO2eq/kWh)."""
    return 200.0 + 10.0 * ((t // 3600) % 24)


def wt_rate(t: float) -> float:
    """The stand-in's 5-minute marginal rate: 900 + 10 x hour of day + minute (lbs/MWh)."""
    return 900.0 + 10.0 * ((t // 3600) % 24) + (t % 3600) / 60.0


def _parse(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _iso(t: float, millis: bool = True) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z") if millis else stamp.isoformat()


@dataclass
class Scenario:
    em_missing: set[float] = field(default_factory=set)  # hour starts answered with no item
    em_null: set[float] = field(default_factory=set)  # hour starts answered with carbonIntensity null
    em_estimated: set[float] = field(default_factory=set)
    em_factor_type_override: str | None = None
    em_429: int = 0  # answer this many requests with 429 first
    retry_after: str = "1"
    em_500_always: bool = False
    wt_429: int = 0
    wt_missing: set[float] = field(default_factory=set)  # 5-minute point times left out
    wt_token_uses: int = 1000  # a token stops working after this many data requests
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    logins: int = 0


class ApiStandIn:
    def __init__(self) -> None:
        self.scenario = Scenario()
        self._tokens: dict[str, int] = {}
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                stand_in.scenario.requests.append((url.path, params))
                if url.path == "/v3/carbon-intensity/past-range":
                    stand_in.past_range(self, params)
                elif url.path == "/login":
                    stand_in.login(self)
                elif url.path == "/v3/historical":
                    stand_in.historical(self, params)
                else:
                    self._send(404, {"status": "error", "message": f"no route {url.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> ApiStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- Electricity Maps v3 ---
    def past_range(self, h, params: dict[str, str]) -> None:
        s = self.scenario
        if h.headers.get("auth-token") != EM_KEY:
            return h._send(401, {"status": "error", "message": "Invalid authentication token"})
        if s.em_429 > 0:
            s.em_429 -= 1
            return h._send(
                429, {"status": "error", "message": "Too many requests"}, {"Retry-After": s.retry_after}
            )
        if s.em_500_always:
            return h._send(503, {"status": "error", "message": "Service temporarily unavailable"})
        zone = params.get("zone", "")
        if zone == "XX":
            return h._send(400, {"status": "error", "message": "Zone 'XX' does not exist."})
        kind = params.get("emissionFactorType", "lifecycle")
        start, end = _parse(params["start"]), _parse(params["end"])
        if end - start > 10 * 86400:
            return h._send(
                400, {"status": "error", "message": "Range exceeds 10 days for hourly granularity"}
            )
        data = []
        t = start
        while t < end:
            if t not in s.em_missing:
                data.append(
                    {
                        "zone": zone,
                        "carbonIntensity": None if t in s.em_null else em_intensity(t),
                        "datetime": _iso(t),
                        "updatedAt": "2026-11-01T00:00:00.000Z",
                        "createdAt": "2026-10-01T00:00:00.000Z",
                        "emissionFactorType": s.em_factor_type_override or kind,
                        "isEstimated": t in s.em_estimated,
                        "estimationMethod": "TIME_SLICER_AVERAGE" if t in s.em_estimated else None,
                    }
                )
            t += 3600.0
        h._send(200, {"zone": zone, "temporalGranularity": "hourly", "data": data})

    # --- WattTime v3 ---
    def login(self, h) -> None:
        expected = "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()).decode()
        if h.headers.get("Authorization") != expected:
            return h._send(403, {"error": "Forbidden", "message": "bad credentials"})
        self.scenario.logins += 1
        token = f"token-{self.scenario.logins}"
        self._tokens[token] = self.scenario.wt_token_uses
        h._send(200, {"token": token})

    def historical(self, h, params: dict[str, str]) -> None:
        s = self.scenario
        auth = h.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or self._tokens.get(token, 0) <= 0:
            return h._send(401, {"error": "Unauthorized", "message": "token expired or invalid"})
        self._tokens[token] -= 1
        if s.wt_429 > 0:
            s.wt_429 -= 1
            return h._send(
                429, {"error": "rate limit", "message": "Too many requests"}, {"Retry-After": s.retry_after}
            )
        start, end = _parse(params["start"]), _parse(params["end"])
        data = []
        t = start
        while t <= end:  # WattTime's start and end are inclusive
            if t not in s.wt_missing:
                data.append({"point_time": _iso(t, millis=False), "value": wt_rate(t)})
            t += 300.0
        meta = {
            "region": params.get("region"),
            "signal_type": params.get("signal_type", "co2_moer"),
            "units": "lbs_co2_per_mwh",
            "data_point_period_seconds": 300,
            "model": {"date": "2026-03-01"},
            "warnings": [],
            "generated_at": "2026-11-01T00:00:00+00:00",
        }
        h._send(200, {"data": data, "meta": meta})

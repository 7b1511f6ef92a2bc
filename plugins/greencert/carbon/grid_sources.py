"""Grid carbon-intensity API clients: Electricity Maps v3 (average) and WattTime v3 (marginal).

Both fetch hourly data for a period and return it in a form that is written
INTO the evidence bundle (``grid.csv``, ``marginal.csv``), so that a
certificate is recomputed from the bundle alone and never from a live API.

Credentials come from Airflow connections (``BaseHook.get_connection``; outside
a task the ``AIRFLOW_CONN_<ID>`` environment variable serves the same
connection). Tokens go in request headers only; they are never put in
URLs, errors, logs, bundles or certificates.

HTTP behaviour: 429 is retried after ``Retry-After`` (seconds or HTTP date;
exponential backoff when absent), 5xx and connection errors with
exponential backoff, both up to ``max_retries``; any other error status is a
``SourceError`` naming the endpoint, the status and the API's message.

Missing hours (documented rule, shared by both clients): a run of at most
``max_fill_hours`` consecutive missing hours between two known hours is
filled by linear interpolation in time; a run at the start or end of the
period is filled with the nearest known hour. Each filled hour is flagged
``filled=true`` and ``is_estimated=true`` in the file and counted in the
provenance; a longer run, or no data at all, is an error (no certificate).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

from greencert.errors import SourceError
from greencert.times import stamp

log = logging.getLogger("greencert")

ELECTRICITY_MAPS_URL = "https://api.electricitymaps.com"
WATTTIME_URL = "https://api.watttime.org"
# Electricity Maps past-range serves at most 10 days of hourly data per request.
EM_MAX_RANGE = dt.timedelta(days=10)
# WattTime v3 historical serves at most 32 days per request; its SDK uses 30-day chunks.
WT_MAX_RANGE = dt.timedelta(days=30)
# WattTime reports units as text; map them onto the pint registry's units.
WATTTIME_UNITS = {
    "lbs_co2_per_mwh": "lbCO2e/MWh",
    "kg_co2_per_mwh": "kgCO2e/MWh",
    "g_co2_per_kwh": "gCO2e/kWh",
}


def local_day_utc(day: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """A local calendar day as a UTC period: 23 or 25 hours long on daylight-saving change days."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    start = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    nxt = day + dt.timedelta(days=1)
    end = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def hours_of(start: dt.datetime, end: dt.datetime) -> np.ndarray:
    """UTC hour starts (Unix seconds) of every hour bin touching [start, end)."""
    t0 = np.floor(start.timestamp() / 3600.0) * 3600.0
    return np.arange(t0, end.timestamp(), 3600.0)


@dataclass
class Credentials:
    base_url: str
    login: str | None = None
    secret: str | None = field(default=None, repr=False)  # never printed

    def __repr__(self) -> str:
        return f"Credentials(base_url={self.base_url!r}, login={self.login!r}, secret=***)"


def connection_credentials(conn_id: str, default_url: str) -> Credentials:
    """API endpoint and secret from the Airflow connection ``conn_id`` (password holds the key)."""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and backend errors: say which connection
        raise SourceError(
            f"Airflow connection {conn_id!r} is not available ({type(exc).__name__}); define it in Airflow "
            f"or as the environment variable AIRFLOW_CONN_{conn_id.upper()}",
            f"connection {conn_id}",
        ) from None
    if conn.host:
        scheme = conn.schema or "https"
        host = conn.host if "://" in conn.host else f"{scheme}://{conn.host}"
        base = f"{host}:{conn.port}" if conn.port else host
    else:
        base = default_url
    return Credentials(base.rstrip("/"), conn.login or None, conn.password or None)


class HttpClient:
    """GET with the retry rules of the module doc; errors never include credentials."""

    def __init__(
        self,
        base_url: str,
        name: str,
        max_retries: int = 5,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 300.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.max_retries = max_retries
        self.timeout = timeout
        self.sleep = sleep
        self.max_wait = max_wait
        self.session = requests.Session()
        self.requests_made = 0
        self.retries = 0

    @staticmethod
    def _retry_after(value: str | None, attempt: int) -> float:
        if value:
            value = value.strip()
            if value.isdigit():
                return float(value)
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
            except (TypeError, ValueError):
                pass
        return min(2.0**attempt, 60.0)

    @staticmethod
    def _message(resp: requests.Response) -> str:
        try:
            body = resp.json()
        except ValueError:
            return resp.text[:200]
        if isinstance(body, dict):
            for key in ("message", "error", "detail", "status"):
                if body.get(key):
                    return str(body[key])[:200]
        return str(body)[:200]

    def get(
        self, path: str, params: dict[str, Any], headers: dict[str, str], auth: Any = None, where: str = ""
    ) -> requests.Response:
        url = f"{self.base_url}{path}"
        for attempt in range(self.max_retries + 1):
            self.requests_made += 1
            try:
                resp = self.session.get(url, params=params, headers=headers, auth=auth, timeout=self.timeout)
            except requests.RequestException as exc:
                if attempt >= self.max_retries:
                    raise SourceError(
                        f"{self.name} {path}: no response after {attempt + 1} attempt(s) ({type(exc).__name__})",
                        where,
                    ) from None
                self.retries += 1
                self.sleep(min(2.0**attempt, 60.0))
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                if attempt >= self.max_retries:
                    raise SourceError(
                        f"{self.name} {path}: HTTP {resp.status_code} after {attempt + 1} attempt(s): "
                        f"{self._message(resp)}",
                        where,
                    )
                wait = self._retry_after(resp.headers.get("Retry-After"), attempt)
                if wait > self.max_wait:
                    raise SourceError(
                        f"{self.name} {path}: rate limited, Retry-After {wait:.0f} s exceeds {self.max_wait:.0f} s",
                        where,
                    )
                self.retries += 1
                log.info("%s %s: HTTP %d, retrying in %.1f s", self.name, path, resp.status_code, wait)
                self.sleep(wait)
                continue
            return resp
        raise AssertionError("unreachable")


@dataclass
class HourlyData:
    """Hourly values for the hour bins of a period, with per-hour provenance flags."""

    hours: np.ndarray  # UTC hour starts, Unix seconds
    values: np.ndarray
    unit: str
    is_estimated: np.ndarray
    estimation_method: list[str]
    filled: np.ndarray
    provenance: dict[str, Any]

    @property
    def filled_hours(self) -> int:
        return int(self.filled.sum())


def fill_missing(
    hours: np.ndarray, known: dict[float, float], max_fill_hours: int, what: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Apply the documented fill rule; returns values, filled flags and the method per hour."""
    n = hours.size
    values = np.full(n, np.nan)
    for i, h in enumerate(hours):
        if float(h) in known:
            values[i] = known[float(h)]
    have = np.isfinite(values)
    methods = ["" for _ in range(n)]
    if not have.any():
        raise SourceError(f"{what}: no data for any hour of the period", what)
    missing = ~have
    # Runs of consecutive missing hours.
    i = 0
    while i < n:
        if not missing[i]:
            i += 1
            continue
        j = i
        while j < n and missing[j]:
            j += 1
        run = j - i
        first = dt.datetime.fromtimestamp(float(hours[i]), dt.UTC)
        if run > max_fill_hours:
            raise SourceError(
                f"{what}: {run} consecutive hour(s) missing from {stamp(first)}, more than the "
                f"{max_fill_hours} the fill rule allows",
                what,
            )
        if i == 0 or j == n:  # edge run: nearest known hour
            source = values[j] if i == 0 else values[i - 1]
            values[i:j] = source
            for k in range(i, j):
                methods[k] = "greencert-nearest-hour"
        else:  # interior run: linear in time between the neighbours
            x0, x1 = hours[i - 1], hours[j]
            values[i:j] = values[i - 1] + (values[j] - values[i - 1]) * (hours[i:j] - x0) / (x1 - x0)
            for k in range(i, j):
                methods[k] = "greencert-linear-interpolation"
        i = j
    return values, missing, methods


def _chunks(
    start: dt.datetime, end: dt.datetime, size: dt.timedelta
) -> list[tuple[dt.datetime, dt.datetime]]:
    out = []
    cursor = start
    while cursor < end:
        nxt = min(end, cursor + size)
        out.append((cursor, nxt))
        cursor = nxt
    return out


def _parse_time(text: Any, where: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"unparseable datetime {text!r} in the response", where) from None
    if moment.tzinfo is None:
        raise SourceError(f"datetime {text!r} has no time zone in the response", where)
    return moment.timestamp()


class ElectricityMaps:
    """Electricity Maps API v3 ``GET /v3/carbon-intensity/past-range`` (gCO2eq/kWh, hourly)."""

    def __init__(self, credentials: Credentials, **http: Any) -> None:
        if not credentials.secret:
            raise SourceError("Electricity Maps needs an API token (connection password)", "Electricity Maps")
        self.http = HttpClient(credentials.base_url, "Electricity Maps", **http)
        self._headers = {"auth-token": credentials.secret}

    def past_range(
        self,
        zone: str,
        start: dt.datetime,
        end: dt.datetime,
        emission_factor_type: str = "lifecycle",
        max_fill_hours: int = 3,
    ) -> HourlyData:
        hours = hours_of(start, end)
        fetch_from = dt.datetime.fromtimestamp(float(hours[0]), dt.UTC)
        known: dict[float, float] = {}
        estimated: dict[float, bool] = {}
        method: dict[float, str] = {}
        dropped = 0
        for a, b in _chunks(fetch_from, end, EM_MAX_RANGE):
            where = f"Electricity Maps past-range zone {zone} [{stamp(a)}, {stamp(b)})"
            params = {
                "zone": zone,
                "start": stamp(a),
                "end": stamp(b),
                "temporalGranularity": "hourly",
                "emissionFactorType": emission_factor_type,
            }
            resp = self.http.get("/v3/carbon-intensity/past-range", params, self._headers, where=where)
            if resp.status_code != 200:
                raise SourceError(
                    f"Electricity Maps /v3/carbon-intensity/past-range: HTTP {resp.status_code}: "
                    f"{HttpClient._message(resp)}",
                    where,
                )
            try:
                body = resp.json()
                items = body["data"]
            except (ValueError, KeyError, TypeError):
                raise SourceError("response is not the documented shape (no 'data' list)", where) from None
            for item in items:
                t = _parse_time(item.get("datetime"), where)
                if t % 3600 != 0 or not (a.timestamp() <= t < b.timestamp()):
                    dropped += 1
                    continue
                kind = item.get("emissionFactorType", emission_factor_type)
                if kind != emission_factor_type:
                    # Lifecycle and direct figures are different quantities: never mix them.
                    raise SourceError(
                        f"asked for {emission_factor_type} factors, got {kind!r} at {item.get('datetime')}",
                        where,
                    )
                value = item.get("carbonIntensity")
                if value is None:
                    continue  # a missing hour: filled (or refused) by the documented rule
                if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                    raise SourceError(f"invalid carbonIntensity {value!r} at {item.get('datetime')}", where)
                known[t] = float(value)
                estimated[t] = bool(item.get("isEstimated", False))
                method[t] = str(item.get("estimationMethod") or "")
        values, filled, fill_methods = fill_missing(
            hours, known, max_fill_hours, f"Electricity Maps zone {zone}"
        )
        is_est = np.array([estimated.get(float(h), True) for h in hours]) | filled
        methods = [fill_methods[i] or method.get(float(h), "") for i, h in enumerate(hours)]
        provenance = {
            "source": "Electricity Maps API v3",
            "endpoint": "/v3/carbon-intensity/past-range",
            "zone": zone,
            "temporal_granularity": "hourly",
            "emission_factor_type": emission_factor_type,
            "hours": int(hours.size),
            "filled_hours": int(filled.sum()),
            "estimated_hours": int(is_est.sum()),
            "dropped_points": dropped,
            "fill_rule": f"linear interpolation inside, nearest hour at the edges, runs up to {max_fill_hours} h",
            "requests": self.http.requests_made,
            "retries": self.http.retries,
            "retrieved_at": stamp(dt.datetime.now(dt.UTC)),
        }
        return HourlyData(hours, values, "gCO2e/kWh", is_est, methods, filled, provenance)


class WattTime:
    """WattTime API v3: ``GET /login`` (basic auth) then ``GET /v3/historical`` (marginal rate)."""

    def __init__(self, credentials: Credentials, **http: Any) -> None:
        if not credentials.login or not credentials.secret:
            raise SourceError(
                "WattTime needs a username and password (connection login/password)", "WattTime"
            )
        self.http = HttpClient(credentials.base_url, "WattTime", **http)
        self._auth = (credentials.login, credentials.secret)
        self._token: str | None = None

    def _login(self) -> None:
        resp = self.http.get("/login", {}, {}, auth=self._auth, where="WattTime /login")
        token = None
        if resp.status_code == 200:
            try:
                token = resp.json().get("token")
            except (ValueError, AttributeError):
                token = None
        if not token:
            raise SourceError(f"WattTime login failed: HTTP {resp.status_code}", "WattTime /login")
        self._token = token

    def historical(
        self,
        region: str,
        start: dt.datetime,
        end: dt.datetime,
        signal_type: str = "co2_moer",
        max_fill_hours: int = 3,
    ) -> HourlyData:
        """Hourly means of the (5-minute) marginal rates, in the unit the API reports."""
        hours = hours_of(start, end)
        fetch_from = dt.datetime.fromtimestamp(float(hours[0]), dt.UTC)
        sums: dict[float, float] = {}
        counts: dict[float, int] = {}
        units: set[str] = set()
        model = None
        for a, b in _chunks(fetch_from, end, WT_MAX_RANGE):
            where = f"WattTime historical region {region} [{stamp(a)}, {stamp(b)})"
            if self._token is None:
                self._login()
            params = {"region": region, "signal_type": signal_type, "start": stamp(a), "end": stamp(b)}
            resp = self.http.get(
                "/v3/historical", params, {"Authorization": f"Bearer {self._token}"}, where=where
            )
            if resp.status_code == 401:  # tokens last 30 minutes: log in again once
                self._login()
                resp = self.http.get(
                    "/v3/historical", params, {"Authorization": f"Bearer {self._token}"}, where=where
                )
            if resp.status_code != 200:
                raise SourceError(
                    f"WattTime /v3/historical: HTTP {resp.status_code}: {HttpClient._message(resp)}", where
                )
            try:
                body = resp.json()
                items = body["data"]
                meta = body.get("meta") or {}
            except (ValueError, KeyError, TypeError, AttributeError):
                raise SourceError("response is not the documented shape (no 'data' list)", where) from None
            units.add(str(meta.get("units", "lbs_co2_per_mwh")))
            model = (meta.get("model") or {}).get("date", model)
            for item in items:
                t = _parse_time(item.get("point_time"), where)
                if not (a.timestamp() <= t < b.timestamp()):
                    continue  # the API's end is inclusive: the next chunk owns that point
                value = item.get("value")
                if value is None:
                    continue
                hour = float(np.floor(t / 3600.0) * 3600.0)
                sums[hour] = sums.get(hour, 0.0) + float(value)
                counts[hour] = counts.get(hour, 0) + 1
        if len(units) != 1 or next(iter(units)) not in WATTTIME_UNITS:
            raise SourceError(f"unexpected or mixed units {sorted(units)} in WattTime responses", "WattTime")
        unit = WATTTIME_UNITS[next(iter(units))]
        known = {h: sums[h] / counts[h] for h in sums}
        values, filled, methods = fill_missing(hours, known, max_fill_hours, f"WattTime region {region}")
        provenance = {
            "source": "WattTime API v3",
            "endpoint": "/v3/historical",
            "region": region,
            "signal_type": signal_type,
            "model_date": model,
            "units": next(iter(units)),
            "aggregation": "hourly mean of the points inside each UTC hour",
            "hours": int(hours.size),
            "filled_hours": int(filled.sum()),
            "fill_rule": f"linear interpolation inside, nearest hour at the edges, runs up to {max_fill_hours} h",
            "requests": self.http.requests_made,
            "retries": self.http.retries,
            "retrieved_at": stamp(dt.datetime.now(dt.UTC)),
        }
        return HourlyData(hours, values, unit, filled.copy(), methods, filled, provenance)


def write_hourly_csv(path, data: HourlyData, value_column: str, emission_factor_type: str | None) -> None:
    """Write hourly data as a bundle CSV: timestamp, value, provenance flags."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        columns = ["timestamp", value_column]
        if value_column == "intensity":
            columns += ["is_estimated", "estimation_method", "emission_factor_type", "filled"]
        writer.writerow(columns)
        for i, h in enumerate(data.hours):
            row = [stamp(dt.datetime.fromtimestamp(float(h), dt.UTC)), f"{data.values[i]:.6g}"]
            if value_column == "intensity":
                row += [
                    "true" if data.is_estimated[i] else "false",
                    data.estimation_method[i],
                    emission_factor_type or "",
                    "true" if data.filled[i] else "false",
                ]
            writer.writerow(row)

"""Airflow hook for the Prometheus HTTP API (``/api/v1/query_range``, ``/api/v1/status/buildinfo``).

The connection (conn type ``http``) gives the server:

- ``host``: a host name, or a full base URL such as ``https://prom.example.com/prometheus``;
- ``port``; ``schema``: ``http`` or ``https`` as in Airflow's HTTP connections (in the URI form
  ``http://host:9090/prefix`` Airflow stores the path in ``schema``: any other value is taken as a
  path prefix);
- ``login`` / ``password``: HTTP basic auth, if set;
- extras: ``headers`` (a mapping, e.g. ``{"Authorization": "Bearer ..."}``), ``verify`` (TLS: true,
  false or a CA bundle path), ``timeout`` (seconds per request, default 60), ``retries`` (extra
  attempts after a failure, default 4) and ``backoff`` (first wait in seconds, doubled per retry,
  default 1).

It works inside a task and outside a scheduler alike: Airflow resolves connections from
``AIRFLOW_CONN_<CONN_ID>`` environment variables natively, before its metadata database.

Connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff; a 4xx answer
(a bad query) fails at once. Every failure raises :class:`SourceError` naming the query and the
server's own error text. Credentials never appear in errors or results.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.sdk.bases.hook import BaseHook

from greencert.errors import ConfigError, SourceError
from greencert.times import stamp_exact

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Transport failures worth another try: refused or reset connections, timeouts, and an answer cut
# off mid-body (a server stopping while it sends).
TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


def _is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in ("auth", "token", "key", "secret", "cookie", "password"))


class PrometheusHook(BaseHook):
    """Talk to one Prometheus-compatible server named by an Airflow connection."""

    conn_name_attr = "prometheus_conn_id"
    default_conn_name = "greencert_prometheus"
    conn_type = "http"
    hook_name = "Prometheus (GreenCert)"

    def __init__(self, prometheus_conn_id: str = default_conn_name, session: requests.Session | None = None):
        super().__init__()
        self.prometheus_conn_id = prometheus_conn_id
        self._session = session
        self._configured = False
        self.base_url = ""
        self.timeout = 60.0
        self.retries = 4
        self.backoff = 1.0

    # -- connection -------------------------------------------------------------------------------

    def _extra_number(self, extra: dict[str, Any], key: str, default: float, minimum: float) -> float:
        value = extra.get(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not number >= minimum:
            raise ConfigError(
                f"connection extra {key!r} must be a number >= {minimum}, not {value!r}",
                f"Airflow connection {self.prometheus_conn_id}",
            )
        return number

    def get_conn(self) -> requests.Session:
        """A ``requests`` session with the connection's headers, auth and TLS settings."""
        if self._configured:
            assert self._session is not None
            return self._session
        where = f"Airflow connection {self.prometheus_conn_id}"
        try:
            conn = self.get_connection(self.prometheus_conn_id)
        except Exception as exc:  # AirflowNotFoundException and friends: name what to set
            raise ConfigError(
                f"cannot read the connection ({type(exc).__name__}: {exc}); define it in Airflow or as "
                f"environment variable AIRFLOW_CONN_{self.prometheus_conn_id.upper()}",
                where,
            ) from None
        if not conn.host:
            raise ConfigError("connection has no host (the Prometheus server)", where)
        if "@" in urlsplit(conn.host if "://" in conn.host else f"//{conn.host}").netloc:
            # Credentials in a URL end up in error messages and logs: they belong in login/password.
            raise ConfigError("put credentials in the connection's login/password, not in the host", where)
        self.base_url = self._base_url(conn.host, conn.port, conn.schema, conn.conn_type)
        extra = conn.extra_dejson or {}
        self.timeout = self._extra_number(extra, "timeout", 60.0, 0.001)
        self.retries = int(self._extra_number(extra, "retries", 4, 0))
        self.backoff = self._extra_number(extra, "backoff", 1.0, 0.0)
        headers = extra.get("headers") or {}
        if isinstance(headers, str):
            try:
                headers = json.loads(headers)
            except json.JSONDecodeError:
                raise ConfigError("connection extra 'headers' is not a JSON object", where) from None
        if not isinstance(headers, dict):
            raise ConfigError("connection extra 'headers' must be a mapping of header to value", where)
        session = self._session or requests.Session()
        session.headers.update({str(k): str(v) for k, v in headers.items()})
        self._mask([str(v) for k, v in headers.items() if _is_secret_header(str(k))])
        if conn.login:
            session.auth = (conn.login, conn.password or "")
        if "verify" in extra:
            session.verify = extra["verify"]
        self._session = session
        self._configured = True
        return session

    @staticmethod
    def _mask(secrets: list[str]) -> None:
        """Keep header secrets out of task logs (connection passwords Airflow masks by itself)."""
        if not secrets:
            return
        try:
            from airflow.sdk.log import mask_secret
        except ImportError:  # pragma: no cover - older SDKs
            return
        for secret in secrets:
            mask_secret(secret)

    @staticmethod
    def _base_url(host: str, port: int | None, schema: str | None, conn_type: str | None) -> str:
        if "://" in host:
            parts = urlsplit(host)
            netloc = parts.netloc if (port is None or parts.port) else f"{parts.netloc}:{port}"
            return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        scheme = "https" if conn_type == "https" else "http"
        prefix = ""
        if schema in ("http", "https"):
            scheme = schema
        elif schema:
            prefix = "/" + schema.strip("/")
        netloc = f"{host}:{port}" if port else host
        return f"{scheme}://{netloc}{prefix}"

    # -- requests ---------------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, data: dict[str, str] | None = None) -> Any:
        """One API call with retries; returns the ``data`` member of a successful answer."""
        session = self.get_conn()
        url = f"{self.base_url}{path}"
        where = f"Prometheus {self.base_url} ({self.prometheus_conn_id})"
        attempts = self.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                resp = session.request(method, url, data=data, timeout=self.timeout)
            except TRANSIENT as exc:
                problem = f"{type(exc).__name__}: {_short(exc)}"
            except requests.RequestException as exc:  # a bad URL, too many redirects...: not transient
                raise SourceError(f"{what} failed: {type(exc).__name__}: {_short(exc)}", where) from None
            else:
                if resp.status_code < 400:
                    return self._data(resp, what, where)
                server_error = _server_error(resp)
                if resp.status_code not in RETRY_STATUS:
                    raise SourceError(
                        f"{what} was rejected with HTTP {resp.status_code}: {server_error}", where
                    )
                problem = f"HTTP {resp.status_code}: {server_error}"
            if attempt < attempts:
                wait = self.backoff * 2 ** (attempt - 1)
                log.warning(
                    "%s failed (%s); retry %d of %d in %.3g s", what, problem, attempt, attempts - 1, wait
                )
                time.sleep(wait)
        raise SourceError(f"{what} failed after {attempts} attempt(s): {problem}", where)

    @staticmethod
    def _data(resp: requests.Response, what: str, where: str) -> Any:
        try:
            body = resp.json()
        except ValueError:
            raise SourceError(
                f"{what}: the answer is not JSON (HTTP {resp.status_code}, {resp.text[:200]!r})", where
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise SourceError(f"{what}: the server answered {str(body)[:300]}", where)
        if body.get("warnings"):
            # Prometheus (and Thanos, Mimir...) warn when an answer may be incomplete: a partial pull
            # must never become a certificate.
            raise SourceError(f"{what}: the server warned {body['warnings']} (partial data?)", where)
        return body.get("data")

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Evaluate ``query`` at ``start, start+step, ..., <= end`` (Unix seconds); a list of series.

        Each series is ``{"metric": {label: value}, "values": [[t, "value"], ...]}``. The caller
        keeps the window within the server's 11,000 points per series.
        """
        params = {
            "query": query,
            "start": _seconds(start),
            "end": _seconds(end),
            "step": _seconds(step),
            # Let the server give up when we do; Prometheus durations take no fractions: use ms.
            "timeout": f"{max(1, round(self.timeout * 1000))}ms",
        }
        what = f"query {query!r} over [{stamp_exact(start)}, {stamp_exact(end)}] step {_seconds(step)} s"
        data = self._call("POST", "/api/v1/query_range", what, params)
        if not isinstance(data, dict) or data.get("resultType") != "matrix":
            raise SourceError(f"{what}: expected a matrix result, got {str(data)[:200]}", self.base_url)
        result = data.get("result")
        if not isinstance(result, list):
            raise SourceError(f"{what}: the result is not a list of series", self.base_url)
        return result

    def build_info(self) -> dict[str, Any]:
        """``/api/v1/status/buildinfo`` (version, revision...); empty if the server has no such endpoint."""
        try:
            data = self._call("GET", "/api/v1/status/buildinfo", "build info request")
        except SourceError as exc:
            # Some Prometheus-compatible servers lack the endpoint; that is no reason to stop a pull.
            if "HTTP 404" in exc.problem:
                return {}
            raise
        return data if isinstance(data, dict) else {}


def _seconds(value: float) -> str:
    """Unix seconds with millisecond precision, Prometheus' own resolution."""
    return f"{round(value * 1000) / 1000:.3f}".rstrip("0").rstrip(".")


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _server_error(resp: requests.Response) -> str:
    """Prometheus' ``errorType: error`` text, else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300].strip() or resp.reason
    if isinstance(body, dict) and "error" in body:
        return f"{body.get('errorType', 'error')}: {body['error']}"
    return str(body)[:300]

"""The "Green certificates" page and JSON API, mounted into the Airflow API server by the plugin.

Routes (under the plugin's mount prefix, ``/greencert``):

* ``GET /``                  server-rendered page: certificates with grade, kWh/Mtok, gCO2e/Mtok,
                             period and status; filters by site and deployment; paging; links to
                             each label and to the DAG run that issued it;
* ``GET /certificates``      the same rows as JSON, paged (``offset``, ``limit``) and filtered
                             (``site``, ``deployment``, ``status``);
* ``GET /files/{path}``      a published file of the registry (label, certificate JSON, signature...).

Everything is read-only (GET only) and behind Airflow's own authentication: Airflow does not
authenticate plugin apps, so every route depends on the auth manager's asset read permission (the
certificates are the ``greencert_certificates`` asset). Unauthenticated page requests are sent to
the auth manager's login page; API requests get 401.

The registry is ``$GREENCERT_REGISTRY``, else the ``registry`` of the fleet config
``$GREENCERT_CONFIG`` (default: the sample fleet). Rows come from the certificate files, each checked
against the registry's signed TUF metadata under the installation's trust store (never from
``index.json``, which any registry writer could edit); what does not verify shows as unverified. "Which run issued it" comes from Airflow's asset events, never
from the certificate (certificates stay byte-identical across reruns).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

# At module level (not inside create_app): FastAPI resolves the route annotations, which are
# strings under ``from __future__ import annotations``, in this module's globals.
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse

from greencert.certificate.status import MEASUREMENT_CLASSES as MEASUREMENT_CLASSES_TEXT
from greencert.times import to_utc

log = logging.getLogger("greencert.webui")

MOUNT_PREFIX = "/greencert"
MAX_LIMIT = 500
DEFAULT_LIMIT = 50
# The displayed statuses (greencert.certificate.status): "development key" is a valid certificate
# signed with an installation's development key.
STATUSES = ("valid", "development key", "superseded", "expired", "revoked", "unverified")
GRADES = ("A", "B", "C", "D", "E", "F", "G")
# What was metered (certificate measurement_class, scheme 2026.3+), best first, and in words.
MEASUREMENT_CLASSES = tuple(MEASUREMENT_CLASSES_TEXT)
# Registry files the page may serve, by suffix; anything else (work files, keys folder listings) is 404.
SERVABLE = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".pdf": "application/pdf",
    ".sig": "application/octet-stream",
    ".pem": "application/x-pem-file",
    ".csv": "text/csv; charset=utf-8",
    ".parquet": "application/octet-stream",
    ".yaml": "text/plain; charset=utf-8",
}
# Registry pages are generated from data: no scripts, nothing loaded from elsewhere.
FILE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox allow-same-origin"


def registry_root() -> Path:
    """The registry the page shows: ``$GREENCERT_REGISTRY`` or the fleet config's registry."""
    if env := os.environ.get("GREENCERT_REGISTRY", "").strip():
        return Path(env).expanduser().resolve()
    from greencert.config import load_config
    from greencert.tasks import DEFAULT_CONFIG

    return load_config(os.environ.get("GREENCERT_CONFIG") or DEFAULT_CONFIG).registry_path


_ROWS_CACHE: dict[str, tuple[tuple[Any, ...], list[dict[str, Any]]]] = {}


def _registry_signature(registry: Path) -> tuple[Any, ...]:
    """Changes whenever a certificate or the signed status changes (renames touch folder mtimes)."""
    stamp = registry / "metadata" / "timestamp.json"
    status = (stamp.stat().st_mtime_ns, stamp.stat().st_size) if stamp.exists() else None
    folders = tuple(sorted((str(d), d.stat().st_mtime_ns) for d in registry.glob("*/*") if d.is_dir()))
    return status, folders


def load_rows(registry: Path, now: dt.datetime | None = None) -> tuple[list[dict[str, Any]], str]:
    """Every certificate row of ``registry``, each checked against its signed metadata ("verified").

    The page never takes a status from ``index.json`` (anyone who can write the registry can write
    that file): rows are checked with the trust store of the API server's installation
    (``$GREENCERT_TRUST_STORE`` or ``$GREENCERT_HOME/trust.json``); what does not verify shows as
    ``unverified``. The checked rows are kept until the registry changes.
    """
    from greencert.certificate.registry import list_certificates

    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if not registry.is_dir():
        return [], "verified"
    key = str(registry)
    signature = _registry_signature(registry)
    cached = _ROWS_CACHE.get(key)
    if cached is not None and cached[0] == signature:
        rows = json.loads(json.dumps(cached[1]))
        # A certificate may have expired since the rows were checked.
        for row in rows:
            until = row.get("valid_until")
            if row.get("status") in ("valid", "superseded") and until and to_utc(until) <= now:
                row["status"] = "expired"
        return rows, "verified"
    rows = list_certificates(registry, now)
    _ROWS_CACHE[key] = (signature, json.loads(json.dumps(rows)))
    return rows, "verified"


def select_rows(
    rows: list[dict[str, Any]],
    *,
    site: str | None = None,
    deployment: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = DEFAULT_LIMIT,
    model: str | None = None,
    grade: str | None = None,
    since: str | None = None,
    until: str | None = None,
    measurement: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Filter, order (newest period first, then site, deployment) and page the rows; return (total, page).

    ``status`` is a displayed status (``development key`` included); ``since``/``until`` are
    dates (``YYYY-MM-DD``, UTC): a certificate is chosen when its period starts on or after
    ``since`` and before the day after ``until``. ``measurement`` is a measurement class
    (certificates older than scheme 2026.3 state none and are not chosen by it).
    """
    from greencert.certificate.status import display_status

    chosen = [
        r
        for r in rows
        if (not site or r["site"] == site)
        and (not deployment or r["deployment"] == deployment)
        and (not status or display_status(r) == status)
        and (not model or r.get("model") == model)
        and (not grade or r.get("grade") == grade)
        and (not since or r["period"]["start"][:10] >= since)
        and (not until or r["period"]["start"][:10] <= until)
        and (not measurement or r.get("measurement_class") == measurement)
    ]
    # Two stable sorts: newest period end first; ties by site, deployment, id.
    chosen.sort(key=lambda r: (r["site"], r["deployment"], r["certificate_id"]))
    chosen.sort(key=lambda r: r["period"]["end"], reverse=True)
    return len(chosen), chosen[offset : offset + limit]


# --- the analyst's view: figures with intervals, fleet totals, trends, rejections ---------------

_FIGURES_CACHE: dict[str, tuple[int, dict[str, Any]]] = {}


def certificate_figures(registry: Path, row: dict[str, Any]) -> dict[str, Any]:
    """Intervals and totals of one row's certificate (read from its file, kept until the file changes)."""
    rel = (row.get("paths") or {}).get("json")
    if not rel:
        return {}
    path = registry / rel
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return {}
    cached = _FIGURES_CACHE.get(str(path))
    if cached and cached[0] == stamp:
        return cached[1]
    try:
        cert = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    m = cert.get("metrics") or {}

    def value(key: str) -> float | None:
        v = (m.get(key) or {}).get("value")
        return float(v) if isinstance(v, int | float) else None

    figures = {
        "energy_interval": (m.get("energy_per_million_tokens") or {}).get("interval95"),
        "carbon_interval": (m.get("carbon_per_million_tokens") or {}).get("interval95"),
        "facility_kwh": value("facility_energy"),
        "output_tokens": value("output_tokens"),
        "carbon_g": value("operational_carbon"),
    }
    _FIGURES_CACHE[str(path)] = (stamp, figures)
    return figures


def fleet_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals and grade distribution of the chosen rows.

    Each certificate covers its own period (a newer day "supersedes" the older one of the same
    deployment, but does not cover its period), so every row counts except revoked ones (the
    issuer withdrew the figures) and unverified ones (only a claim).
    """
    counted = [r for r in rows if r["status"] not in ("revoked", "unverified")]
    energy = sum((r.get("figures") or {}).get("facility_kwh") or 0.0 for r in counted)
    tokens = sum((r.get("figures") or {}).get("output_tokens") or 0.0 for r in counted)
    carbon = sum((r.get("figures") or {}).get("carbon_g") or 0.0 for r in counted)
    grades = dict.fromkeys("ABCDEFG", 0)
    for r in counted:
        if r.get("grade") in grades:
            grades[r["grade"]] += 1
    most = max(grades.values()) or 1
    return {
        "certificates": len(counted),
        "left_out": len(rows) - len(counted),
        "facility_kwh": energy,
        "output_mtok": tokens / 1e6,
        "carbon_kg": carbon / 1000.0,
        "kwh_per_mtok": energy / (tokens / 1e6) if tokens else None,
        "g_per_mtok": carbon / (tokens / 1e6) if tokens else None,
        "grades": [{"grade": g, "count": n, "width": round(100.0 * n / most, 1)} for g, n in grades.items()],
    }


TREND_W, TREND_H, TREND_L, TREND_R, TREND_T, TREND_B = 320, 120, 40, 8, 8, 20


def _nice(value: float) -> float:
    from greencert.certificate.label import _nice_ceiling

    return _nice_ceiling(value)


def trend_chart(points: list[dict[str, Any]], key: str, interval_key: str) -> dict[str, Any]:
    """Geometry of one trend chart: a value per certificate over time, with its 95 % interval."""
    pts = [p for p in points if p.get(key) is not None]
    plot_w, plot_h = TREND_W - TREND_L - TREND_R, TREND_H - TREND_T - TREND_B
    if not pts:
        return {"empty": True, "w": TREND_W, "h": TREND_H}
    times = [to_utc(p["start"]).timestamp() for p in pts]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    highs = [float((p.get(interval_key) or [None, p[key]])[1]) for p in pts]
    top = _nice(max(highs + [float(p[key]) for p in pts]))
    base = TREND_T + plot_h

    def y(v: float) -> float:
        return round(base - plot_h * v / top, 2)

    marks = []
    for p, t in zip(pts, times, strict=True):
        x = round(TREND_L + (plot_w * (t - t0) / span if t1 > t0 else plot_w / 2), 2)
        iv = p.get(interval_key)
        marks.append(
            {
                "x": x,
                "y": y(float(p[key])),
                "y_low": y(float(iv[0])) if iv else None,
                "y_high": y(float(iv[1])) if iv else None,
                "title": f"{p['start'][:10]}: {float(p[key]):.4g}"
                + (f" (95 %: {iv[0]:.4g}-{iv[1]:.4g})" if iv else ""),
            }
        )
    ticks = [{"y": y(top * k / 2), "label": f"{top * k / 2:g}"} for k in range(3)]
    x_labels = [{"x": marks[0]["x"], "label": pts[0]["start"][:10], "anchor": "start"}]
    if len(marks) > 1:
        x_labels.append({"x": marks[-1]["x"], "label": pts[-1]["start"][:10], "anchor": "end"})
    return {
        "empty": False,
        "w": TREND_W,
        "h": TREND_H,
        "left": TREND_L,
        "right": TREND_W - TREND_R,
        "base": base,
        "marks": marks,
        "line": " ".join(f"{m['x']},{m['y']}" for m in marks),
        "ticks": ticks,
        "x_labels": x_labels,
    }


def deployment_trends(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (site, deployment): its certificates over time as two charts (kWh/Mtok, gCO2e/Mtok)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "unverified":
            continue
        groups.setdefault((r["site"], r["deployment"]), []).append(r)
    out = []
    for (site, deployment), items in sorted(groups.items()):
        items.sort(key=lambda r: r["period"]["start"])
        points = [
            {
                "start": r["period"]["start"],
                "energy": r.get("energy_kwh_per_mtok"),
                "carbon": r.get("carbon_gco2e_per_mtok"),
                "energy_interval": (r.get("figures") or {}).get("energy_interval"),
                "carbon_interval": (r.get("figures") or {}).get("carbon_interval"),
            }
            for r in items
        ]
        out.append(
            {
                "site": site,
                "deployment": deployment,
                "model": items[-1].get("model"),
                "size_class": items[-1].get("size_class"),
                "latest_grade": items[-1].get("grade"),
                "latest_confirmed": items[-1].get("confirmed_grade"),
                "count": len(items),
                "energy": trend_chart(points, "energy", "energy_interval"),
                "carbon": trend_chart(points, "carbon", "carbon_interval"),
            }
        )
    return out


def work_root() -> Path | None:
    """Where the certification tasks keep their work folders (rejection records live there)."""
    if env := os.environ.get("GREENCERT_WORK_DIR", "").strip():
        return Path(env).expanduser().resolve()
    try:
        from greencert.config import load_config
        from greencert.tasks import DEFAULT_CONFIG

        return load_config(os.environ.get("GREENCERT_CONFIG") or DEFAULT_CONFIG).work_path
    except Exception:  # no fleet config: no rejection records to show
        return None


def load_rejections(work: Path | None) -> list[dict[str, Any]]:
    """The rejection records the failing tasks wrote (``runs/<deployment>/<interval>/rejection.json``)."""
    if work is None or not (work / "runs").is_dir():
        return []
    out = []
    for path in sorted((work / "runs").glob("*/*/rejection.json")):
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        start, _, end = str(record.get("interval", "")).partition("_")
        record["period"] = {"start": _interval_stamp(start), "end": _interval_stamp(end)}
        record["folder"] = path.parent.relative_to(work / "runs").as_posix()
        out.append(record)
    return out


def _interval_stamp(text: str) -> str | None:
    """``20260101T0000Z`` -> ``2026-01-01T00:00:00Z`` (the work folders' interval keys)."""
    try:
        return dt.datetime.strptime(text, "%Y%m%dT%H%MZ").strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def issuing_runs(certificate_ids: set[str]) -> dict[str, dict[str, Any]]:
    """certificate id -> the latest DAG run that published it (from the asset events in Airflow's DB)."""
    if not certificate_ids:
        return {}
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from greencert.assets import CERTIFICATES_ASSET_NAME

    found: dict[str, dict[str, Any]] = {}
    with create_session() as session:
        events = session.execute(
            select(AssetEvent.extra, AssetEvent.source_dag_id, AssetEvent.source_run_id, AssetEvent.timestamp)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == CERTIFICATES_ASSET_NAME, AssetEvent.source_run_id.is_not(None))
            .order_by(AssetEvent.timestamp)
        )
        for extra, dag_id, run_id, timestamp in events:
            extra = extra or {}
            # A segmented bundle's publish emits one event naming every segment's certificate.
            ids = extra.get("certificate_ids") or [extra.get("certificate_id")]
            for cid in ids:
                if cid in certificate_ids:  # later events overwrite: the latest publication wins
                    found[cid] = {"dag_id": dag_id, "run_id": run_id, "published_at": timestamp.isoformat()}
    return found


def _links(row: dict[str, Any], run: dict[str, Any] | None, app_root: str, ui_root: str) -> dict[str, Any]:
    paths = row.get("paths") or {}

    def file_url(rel: str | None) -> str | None:
        return f"{app_root}/files/{quote(rel)}" if rel else None

    return {
        "label": file_url(paths.get("label")),
        "json": file_url(paths.get("json")),
        "data_docs": file_url(paths.get("data_docs")),
        "pdf": file_url(paths.get("pdf")),
        "dag_run": (
            f"{ui_root}/dags/{quote(run['dag_id'], safe='')}/runs/{quote(run['run_id'], safe='')}"
            if run
            else None
        ),
    }


def _roots(request: Request) -> tuple[str, str]:
    """(path of this app, path of the Airflow UI), both without a trailing slash, behind any base_url."""
    app_root = (request.scope.get("root_path") or "").rstrip("/")
    ui_root = app_root[: -len(MOUNT_PREFIX)] if app_root.endswith(MOUNT_PREFIX) else ""
    return app_root, ui_root


def _page_data(
    request: Request,
    site: str | None,
    deployment: str | None,
    status: str | None,
    offset: int,
    limit: int,
    model: str | None = None,
    grade: str | None = None,
    since: str | None = None,
    until: str | None = None,
    analysis: bool = False,
    measurement: str | None = None,
) -> dict[str, Any]:
    from greencert.certificate.status import display_status, grade_text, measurement_text, status_detail

    registry = registry_root()
    rows, source = load_rows(registry)
    filters = {"site": site, "deployment": deployment, "status": status, "model": model, "grade": grade,
               "since": since, "until": until, "measurement": measurement}  # fmt: skip
    total, page = select_rows(rows, offset=offset, limit=limit, **filters)
    try:
        runs = issuing_runs({r["certificate_id"] for r in page})
    except Exception:  # the page must still list certificates if the metadata DB is unreachable
        log.exception("could not look up the DAG runs that issued the certificates")
        runs = {}
    app_root, ui_root = _roots(request)
    items = []
    for row in page:
        run = runs.get(row["certificate_id"])
        items.append(
            {
                **row,
                "display_status": display_status(row),  # the one status vocabulary (certificate/status.py)
                "grade_text": grade_text(row),
                "measurement_text": measurement_text(row),
                "status_detail": status_detail(row),
                "issued_by": run,
                "links": _links(row, run, app_root, ui_root),
            }
        )
    data = {
        "registry": str(registry),
        "source": source,
        "total": total,
        "offset": offset,
        "limit": limit,
        "filters": filters,
        "sites": sorted({r["site"] for r in rows}),
        "deployments": sorted({r["deployment"] for r in rows if not site or r["site"] == site}),
        "models": sorted({r["model"] for r in rows if r.get("model")}),
        "measurement_classes": [
            m for m in MEASUREMENT_CLASSES if any(r.get("measurement_class") == m for r in rows)
        ],
        "certificates": items,
    }
    if analysis:
        # Totals, distribution and trends cover every row the filters choose, not one page.
        _, chosen = select_rows(rows, offset=0, limit=len(rows) or 1, **filters)
        for r in chosen:
            r["figures"] = certificate_figures(registry, r)
        data["summary"] = fleet_summary(chosen)
        data["trends"] = deployment_trends(chosen)
        rejections = [
            r
            for r in load_rejections(work_root())
            if (not deployment or r.get("deployment") == deployment)
            and (not since or (r["period"]["start"] or "")[:10] >= since)
            and (not until or (r["period"]["start"] or "")[:10] <= until)
        ]
        for r in rejections:
            r["data_docs_url"] = (
                f"{app_root}/rejections/{quote(r['folder'])}/{quote(r['data_docs'])}"
                if r.get("data_docs")
                else None
            )
        data["rejections"] = rejections
    return data


def _when(stamp: str) -> str:
    """``2026-01-01T00:00:00Z`` -> ``2026-01-01`` (midnight) or ``2026-01-01 06:00``."""
    moment = to_utc(stamp)
    return f"{moment:%Y-%m-%d}" if moment.time() == dt.time(0) else f"{moment:%Y-%m-%d %H:%M}"


def render_page(data: dict[str, Any], app_root: str) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    from greencert.certificate.render import GRADE_COLOURS

    env = Environment(
        loader=PackageLoader("greencert", "templates"), autoescape=select_autoescape(["html", "j2"])
    )
    env.filters["when"] = _when
    limit, offset, total = data["limit"], data["offset"], data["total"]
    filters = {k: v for k, v in data["filters"].items() if v}

    def page_url(new_offset: int) -> str:
        return f"{app_root}/?{urlencode({**filters, 'offset': new_offset, 'limit': limit})}"

    return env.get_template("ui_certificates.html.j2").render(
        d=data,
        colours=GRADE_COLOURS,
        statuses=STATUSES,
        grades=GRADES,
        measurement_words=MEASUREMENT_CLASSES_TEXT,
        app_root=app_root,
        first=offset + 1 if total else 0,
        last=min(offset + limit, total),
        prev_url=page_url(max(offset - limit, 0)) if offset > 0 else None,
        next_url=page_url(offset + limit) if offset + limit < total else None,
        json_url=f"{app_root}/certificates?{urlencode({**filters, 'offset': offset, 'limit': limit})}",
    )


def create_app() -> FastAPI:
    """The FastAPI app the plugin mounts at ``/greencert``."""
    from airflow.api_fastapi.core_api.security import requires_access_asset

    can_read = [Depends(requires_access_asset("GET"))]
    app = FastAPI(title="GreenCert certificates", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def _login_or_error(request: Request, exc: HTTPException):
        # A person opening the page without a session is sent to Airflow's login and back;
        # API clients get the status code.
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_page and not request.url.path.endswith("/certificates"):
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), 303)
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    # Empty values (an untouched filter of the page's form) mean "no filter".
    Site = Query(None, max_length=64, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    Deployment = Query(None, max_length=64, pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]*)?$")
    Status = Query(None, pattern="^(" + "|".join(STATUSES) + ")?$")
    Model = Query(None, max_length=200)
    Grade = Query(None, pattern="^[A-G]?$")
    Measurement = Query(None, pattern="^(" + "|".join(MEASUREMENT_CLASSES) + ")?$")
    Day = Query(None, pattern=r"^([0-9]{4}-[0-9]{2}-[0-9]{2})?$")

    @app.get("/certificates", dependencies=can_read)
    def certificates(
        request: Request,
        site: str | None = Site,
        deployment: str | None = Deployment,
        status: str | None = Status,
        offset: int = Query(0, ge=0),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        model: str | None = Model,
        grade: str | None = Grade,
        since: str | None = Day,
        until: str | None = Day,
        measurement: str | None = Measurement,
    ) -> dict[str, Any]:
        data = _page_data(
            request, site or None, deployment or None, status or None, offset, limit,
            model or None, grade or None, since or None, until or None, measurement=measurement or None,
        )  # fmt: skip
        data.pop("sites")
        data.pop("measurement_classes")
        data.pop("deployments")
        data.pop("models")
        return data

    @app.get("/", response_class=HTMLResponse, dependencies=can_read)
    def page(
        request: Request,
        site: str | None = Site,
        deployment: str | None = Deployment,
        status: str | None = Status,
        offset: int = Query(0, ge=0),
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
        model: str | None = Model,
        grade: str | None = Grade,
        since: str | None = Day,
        until: str | None = Day,
        measurement: str | None = Measurement,
    ) -> HTMLResponse:
        data = _page_data(
            request, site or None, deployment or None, status or None, offset, limit,
            model or None, grade or None, since or None, until or None, analysis=True,
            measurement=measurement or None,
        )  # fmt: skip
        return HTMLResponse(render_page(data, _roots(request)[0]))

    @app.get("/rejections/{path:path}", dependencies=can_read)
    def rejection_file(path: str) -> FileResponse:
        """A rejected run's Data Docs page (from the work folder; nothing else of it is served)."""

        work = work_root()
        parts = path.split("/")
        if work is None or len(parts) < 4 or parts[2] != "datadocs":
            raise HTTPException(404, "no such rejection page")
        return _serve(work / "runs", parts, "no such rejection page")

    @app.get("/files/{path:path}", dependencies=can_read)
    def registry_file(path: str) -> FileResponse:
        return _serve(registry_root(), path.split("/"), "no such file in the registry")

    def _serve(root: Path, parts: list[str], missing: str) -> FileResponse:
        """A servable file below ``root`` (no escape through ``..`` or links), else 404 ``missing``."""
        from greencert.certificate.registry import safe_child
        from greencert.errors import ConfigError

        try:
            target = safe_child(root, *parts)
        except ConfigError:
            raise HTTPException(404, missing) from None
        media_type = SERVABLE.get(target.suffix)
        if media_type is None or not target.is_file():
            raise HTTPException(404, missing)
        return FileResponse(target, media_type=media_type, headers={"Content-Security-Policy": FILE_CSP})

    return app

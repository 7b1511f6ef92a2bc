"""``greencert sources check`` and ``greencert extract``: see and run a deployment's pull by hand.

``sources check`` asks each Prometheus deployment's server, per source profile and role, which
series its selector finds (``/api/v1/series``: their label sets), then pulls the period in memory
(nothing written) and shows the physical devices found with their samples and scrape interval,
label churn stitched, MIG instances and attribution shares, before any certificate is issued. A
deployment whose pull fails (a series missing, the server unreachable) is reported with the reason
and which selectors found nothing; the command then exits 4. ``extract`` writes the evidence bundle
the DAG's extract task writes (the same pull, then the site's carbon data), into a folder of the
operator's choice.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from greencert.errors import ConfigError, SourceError


def parse_moment(text: str) -> dt.datetime:
    """An RFC 3339 time such as 2026-02-01T00:00:00Z (a time zone is required)."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r} is not an RFC 3339 time such as 2026-02-01T00:00:00Z") from None
    if moment.tzinfo is None:
        raise ConfigError(f"{text!r} has no time zone (write e.g. 2026-02-01T00:00:00Z)")
    return moment.astimezone(dt.UTC)


def window(start: str | None, end: str | None) -> tuple[dt.datetime, dt.datetime]:
    """The period to look at; by default the last whole hour."""
    if end is None:
        now = dt.datetime.now(dt.UTC)
        end_t = now.replace(minute=0, second=0, microsecond=0)
    else:
        end_t = parse_moment(end)
    start_t = parse_moment(start) if start is not None else end_t - dt.timedelta(hours=1)
    if end_t <= start_t:
        raise ConfigError(f"--end {end_t.isoformat()} is not after --start {start_t.isoformat()}")
    return start_t, end_t


def profile_selectors(dep: Any, user_profiles: Any, where: str) -> list[dict[str, Any]]:
    """Per profile of ``dep``, every (role, PromQL selector) it pulls, with the deployment's labels."""
    from greencert.sources.profiles import (
        ROLE_FACILITY,
        ROLE_IT,
        ROLE_POWER,
        ROLE_TOKENS,
        build_selector,
        builtin_profiles,
        parse_profile,
    )

    src = dep.source
    known = dict(builtin_profiles())
    for name, data in (user_profiles or {}).items():
        known[name] = parse_profile(name, data, f"{where}: source_profiles.{name}")
    names = [src.profile] if isinstance(src.profile, str) else list(src.profile)
    out = []
    for name in names:
        prof = known.get(name)
        if prof is None:
            raise ConfigError(f"unknown source profile {name!r}; known: {', '.join(sorted(known))}", where)
        pairs: list[tuple[str, str, Any]] = []
        if prof.power is not None:
            pairs.append((ROLE_POWER, ROLE_POWER, prof.power))
        if prof.tokens is not None:
            pairs += [
                (f"{ROLE_TOKENS}.output", ROLE_TOKENS, prof.tokens.output),
                (f"{ROLE_TOKENS}.input", ROLE_TOKENS, prof.tokens.input),
            ]
        pairs += [(m.name, m.name, m) for m in prof.meters]
        if prof.facility is not None:
            pairs += [
                (ROLE_FACILITY, ROLE_FACILITY, prof.facility.meter),
                (ROLE_IT, ROLE_IT, prof.facility.it_meter),
            ]
        selectors = []
        for role, label_role, sel in pairs:
            labels = {**src.labels, **src.series_labels.get(label_role, {})}
            selectors.append({"role": role, "query": build_selector(sel, labels)})
        out.append({"profile": name, "selectors": selectors})
    return out


def _series(hook: Any, query: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, str]]:
    """Label sets (without ``__name__``) of the series ``query`` selects in [start, end], sorted."""
    data = hook._call(
        "POST",
        "/api/v1/series",
        f"series request for {query!r}",
        {"match[]": query, "start": f"{start.timestamp():.3f}", "end": f"{end.timestamp():.3f}"},
    )
    if not isinstance(data, list):
        raise SourceError(f"series request for {query!r}: the answer is not a list", hook.base_url)
    sets = [{k: str(v) for k, v in sorted(item.items()) if k != "__name__"} for item in data]
    return sorted(sets, key=lambda labels: sorted(labels.items()))


def _intervals(report: dict[str, Any] | None) -> dict[str, float]:
    """role -> median scrape interval of its devices (from the pull), where the pull measured one."""
    out: dict[str, float] = {}
    for q in (report or {}).get("queries", []):
        if "scrape_interval_seconds" in q:
            out[q["role"]] = q["scrape_interval_seconds"]
    return out


def _token_interval(table: dict[str, Any] | None) -> float | None:
    """Median spacing of the token counters' samples, per instance chain (None without two samples)."""
    import numpy as np

    if not table or len(table.get("timestamp", ())) < 2:
        return None
    gaps = []
    for name in np.unique(table["instance"]):
        t = np.sort(table["timestamp"][table["instance"] == name])
        gaps.append(np.diff(t))
    spacing = np.concatenate(gaps) if gaps else np.array([])
    spacing = spacing[spacing > 0]
    return float(np.median(spacing)) if spacing.size else None


def check(config: str, deployment: str | None, start: str | None, end: str | None) -> list[dict[str, Any]]:
    """The check report of every Prometheus deployment (or the one named).

    Each report has ``deployment``, ``ok``, ``profiles`` (per profile: its selectors with the series
    found, their label sets and scrape interval), the pull's report fields (``roles``, ``server``,
    ``prometheus_version``, ...) when the pull succeeded, else ``problem``.
    """
    from greencert.config import load_config
    from greencert.sources.prometheus import pull_deployment
    from greencert.sources.prometheus_hook import PrometheusHook

    cfg = load_config(config)
    start_t, end_t = window(start, end)
    deps = [cfg.deployment(deployment)] if deployment else list(cfg.deployments)
    reports = []
    for dep in deps:
        if dep.source.kind != "prometheus":
            if deployment:
                raise ConfigError(f"deployment {dep.deployment!r} is not pulled from Prometheus", config)
            continue
        where = f"fleet config: deployment {dep.deployment}"
        period = {"start": start_t.isoformat(), "end": end_t.isoformat()}
        hook = PrometheusHook(dep.source.conn_id)
        report: dict[str, Any] = {"deployment": dep.deployment, "period": period, "server": hook.base_url}
        try:
            profiles = profile_selectors(dep, cfg.source_profiles, where)
            for prof in profiles:
                for sel in prof["selectors"]:
                    sel["series"] = _series(hook, sel["query"], start_t, end_t)
            try:
                result = pull_deployment(cfg, dep, start_t, end_t, hook=hook)
            except SourceError as exc:
                report.update(ok=False, problem=str(exc))
                intervals = {}
            else:
                report.update(result.report, ok=True)
                intervals = _intervals(result.report)
                tokens = _token_interval(result.tables.get("tokens.parquet"))
                if tokens is not None:
                    intervals["tokens.output"] = intervals["tokens.input"] = tokens
            for prof in profiles:
                for sel in prof["selectors"]:
                    if sel["role"] in intervals:
                        sel["scrape_interval_seconds"] = intervals[sel["role"]]
            report["profiles"] = profiles
        except SourceError as exc:  # the server itself: unreachable, refused, garbage
            report.update(ok=False, problem=str(exc), profiles=[])
        report["period"] = period
        reports.append(report)
    return reports


def _format_profiles(r: dict[str, Any], lines: list[str]) -> None:
    for prof in r.get("profiles", []):
        lines.append(f"  profile {prof['profile']}:")
        for sel in prof["selectors"]:
            found = sel.get("series", [])
            head = f"    {sel['role']}: {sel['query']}: "
            if not found:
                lines.append(
                    head + "NO SERIES in the period (check the metric name and the deployment's labels)"
                )
                continue
            head += f"{len(found)} series"
            if "scrape_interval_seconds" in sel:
                head += f", scrape interval {sel['scrape_interval_seconds']:g} s"
            lines.append(head)
            for labels in found[:20]:
                lines.append("      {" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}")
            if len(found) > 20:
                lines.append(f"      ... and {len(found) - 20} more (--json lists all)")


def format_report(reports: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in reports:
        if not r.get("ok", True):
            lines.append(
                f"{r['deployment']}  NOT READY ({r['server']}; {r['period']['start']} -> {r['period']['end']}): "
                f"{r['problem']}"
            )
            _format_profiles(r, lines)
            continue
        lines.append(
            f"{r['deployment']}  ready ({', '.join(p['profile'] for p in r['profiles'])}; {r['server']} "
            f"Prometheus {r['prometheus_version']}; step {r['step_seconds']:g} s; "
            f"{r['period']['start']} -> {r['period']['end']})"
        )
        _format_profiles(r, lines)
        lines.append("  pulled (what a certificate of this period would be computed from):")
        for role, info in r["roles"].items():
            if role == "tokens":
                lines.append(
                    f"  tokens: {len(info['instances'])} instance chain(s), "
                    f"union coverage {info['union_coverage']:.4f}"
                )
                for inst in info["instances"]:
                    extra = f", {len(inst['series'])} series stitched" if len(inst["series"]) > 1 else ""
                    lines.append(f"    {inst['instance']}  {inst['from']} -> {inst['to']}{extra}")
                continue
            lines.append(f"  {role}: {len(info['devices'])} physical device(s)  [{info['query']}]")
            for d in info["devices"]:
                interval = d.get("scrape_interval_seconds")
                head = f"    {d['device']}  {d['samples']} samples from {d['series']} series"
                head += f", scrape interval {interval:g} s" if interval is not None else ""
                if d.get("repeated_samples_dropped"):
                    head += f", {d['repeated_samples_dropped']} repeated samples counted once"
                lines.append(head)
                for change in d.get("stitched", []):
                    changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in change["changed"].items())
                    lines.append(f"      stitched at {change['at']}: {changed}")
                for inst in d.get("mig_instances", []):
                    holders = "; ".join(
                        f"{','.join(f'{k}={v}' for k, v in h['labels'].items()) or 'unheld'}"
                        for h in inst["holders"]
                    )
                    lines.append(f"      MIG instance {inst['gpu_instance']} {inst['profile']}: {holders}")
        attribution = r.get("attribution")
        if attribution:
            lines.append(f"  attribution: rule {attribution['rule']}, match {attribution['match']}")
            for device, detail in attribution["detail"].items():
                lines.append(f"    {device}: share {detail['fraction']}")
    ready = sum(1 for r in reports if r.get("ok", True))
    if not reports:
        lines.append("no deployment of this fleet config is pulled from Prometheus")
    else:
        lines.append(f"{ready} of {len(reports)} deployment(s) ready to certify from Prometheus")
    return "\n".join(lines)


def check_command(
    config: str, deployment: str | None, start: str | None, end: str | None, as_json: bool
) -> tuple[str, bool]:
    """The report (text or JSON) and whether every deployment checked is ready."""
    reports = check(config, deployment, start, end)
    ok = all(r.get("ok", True) for r in reports)
    return (json.dumps(reports, indent=2, default=str) if as_json else format_report(reports)), ok


def extract(config: str, deployment: str, start: str, end: str, out: str) -> Path:
    """Write one deployment's bundle for [start, end) at ``out``, as the DAG's extract task does."""
    from greencert.config import load_config
    from greencert.sources.extract import extract_bundle

    start_t, end_t = window(start, end)
    cfg = load_config(config)
    dep = cfg.deployment(deployment)
    target = Path(out).resolve()
    if dep.source.kind == "prometheus":
        from greencert.sources.prometheus import extract_prometheus

        path = extract_prometheus(cfg, dep, start_t, end_t, target)
    else:
        path = Path(extract_bundle(config, deployment, start_t, end_t))
    if cfg.carbon:
        from greencert.carbon.attach import attach_site_carbon

        path = attach_site_carbon(cfg, Path(path), target, start_t, end_t)
    return Path(path)

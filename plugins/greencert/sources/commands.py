"""``greencert sources check`` and ``greencert extract``: see and run a deployment's pull by hand.

``sources check`` pulls each Prometheus deployment of a fleet config in memory (nothing written) and
shows, per role and profile, the physical devices found, label churn stitched, MIG instances,
attribution shares and scrape intervals, before any certificate is issued. ``extract`` writes the
evidence bundle the DAG's extract task writes (the same pull, then the site's carbon data), into a
folder of the operator's choice.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from greencert.errors import ConfigError


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


def check(config: str, deployment: str | None, start: str | None, end: str | None) -> list[dict[str, Any]]:
    """The pull report of every Prometheus deployment (or the one named)."""
    from greencert.config import load_config
    from greencert.sources.prometheus import pull_deployment

    cfg = load_config(config)
    start_t, end_t = window(start, end)
    deps = [cfg.deployment(deployment)] if deployment else list(cfg.deployments)
    reports = []
    for dep in deps:
        if dep.source.kind != "prometheus":
            if deployment:
                raise ConfigError(f"deployment {dep.deployment!r} is not pulled from Prometheus", config)
            continue
        report = pull_deployment(cfg, dep, start_t, end_t).report
        report["period"] = {"start": start_t.isoformat(), "end": end_t.isoformat()}
        reports.append(report)
    return reports


def format_report(reports: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in reports:
        lines.append(
            f"{r['deployment']}  ({', '.join(r['profiles'])}; {r['server']} Prometheus {r['prometheus_version']}; "
            f"step {r['step_seconds']:g} s; {r['period']['start']} -> {r['period']['end']})"
        )
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
    return "\n".join(lines)


def check_command(
    config: str, deployment: str | None, start: str | None, end: str | None, as_json: bool
) -> str:
    reports = check(config, deployment, start, end)
    return json.dumps(reports, indent=2, default=str) if as_json else format_report(reports)


def extract(config: str, deployment: str, start: str, end: str, out: str) -> Path:
    """Write one deployment's bundle for [start, end) at ``out``, as the DAG's extract task does."""
    from greencert.config import _extract_bundle, load_config

    start_t, end_t = window(start, end)
    cfg = load_config(config)
    dep = cfg.deployment(deployment)
    target = Path(out).resolve()
    if dep.source.kind == "prometheus":
        from greencert.sources.prometheus import extract_prometheus

        path = extract_prometheus(cfg, dep, start_t, end_t, target)
    else:
        path = Path(_extract_bundle(config, deployment, start_t, end_t))
    if cfg.carbon:
        from greencert.carbon.attach import attach_site_carbon

        path = attach_site_carbon(cfg, Path(path), target, start_t, end_t)
    return Path(path)

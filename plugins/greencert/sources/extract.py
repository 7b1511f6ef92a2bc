"""The extract stage: the evidence bundle of one deployment and data interval, from its configured source.

Downstream of the fleet config (``greencert.config``) and of every source (simulator, a bundle folder
made elsewhere, Prometheus); the site's grid and carbon data are attached last (``carbon.attach``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from greencert.carbon.attach import attach_site_carbon
from greencert.config import load_config
from greencert.errors import ConfigError
from greencert.sources.prometheus import extract_prometheus
from greencert.sources.simulate import profile_by_name, simulate_deployment
from greencert.times import compact, interval_key


def extract_stage(config_path: str | Path, deployment: str, start: dt.datetime, end: dt.datetime) -> str:
    """Produce the bundle (see :func:`extract_bundle`), then attach the site's grid and carbon data."""
    path = extract_bundle(config_path, deployment, start, end)
    cfg = load_config(config_path)
    if cfg.carbon:
        target = cfg.work_path / "bundles" / deployment / interval_key(start, end)
        path = str(attach_site_carbon(cfg, Path(path), target, start, end))
    return path


def extract_bundle(config_path: str | Path, deployment: str, start: dt.datetime, end: dt.datetime) -> str:
    """Produce the evidence bundle of one deployment and data interval; return its path.

    Idempotent: the bundle path is keyed on deployment and interval, and is
    rewritten whole (atomically) on a rerun.
    """
    cfg = load_config(config_path)
    dep = cfg.deployment(deployment)
    src = dep.source
    target = cfg.work_path / "bundles" / deployment / interval_key(start, end)
    if src.kind == "simulated":
        try:
            profile = profile_by_name(src.profile or deployment)
        except KeyError as exc:
            raise ConfigError(str(exc), f"{config_path}: deployment {deployment}") from None
        return str(
            simulate_deployment(profile, start, end, target, src.step_seconds, src.file_format, src.seed)
        )
    if src.kind == "bundle":
        path = cfg.resolve(src.path.format(deployment=deployment, start=compact(start), end=compact(end)))
        if not path.is_dir():
            raise ConfigError(
                f"bundle folder {path} does not exist", f"{config_path}: deployment {deployment}"
            )
        return str(path)
    return str(extract_prometheus(cfg, dep, start, end, target))

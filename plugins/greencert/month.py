"""Task bodies of the monthly DAG: certify each day of a month, then each deployment's month.

Each day is a fleet-day (``greencert.fleet``) that also saves every deployment's day partial;
the month is then certified from the partials alone (``pipeline.period_stage``: every section
of the days combined, docs/methodology.md "Months") and published like a day, its evidence the
partials. ``greencert verify`` recomputes it from them and verifies each day's certificate.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError
from greencert.fleet_day import INDEX_NAME, deployment_bundles
from greencert.times import interval_key, to_utc

log = logging.getLogger("greencert")


def days_of(start: Any, end: Any) -> list[str]:
    """The UTC days of [start, end) as YYYY-MM-DD (28-31 for a month)."""
    first, last = to_utc(start), to_utc(end)
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day < last:
        if day >= first:
            days.append(f"{day:%Y-%m-%d}")
        day += dt.timedelta(days=1)
    return days


def certify_day_task(
    fleet_root: str | Path,
    day: str,
    registry: str | Path,
    work_root: str | Path,
    partials_root: str | Path,
    scheme_path: str | Path | None = None,
    simulate_scale: float | None = None,
) -> dict[str, str]:
    """One day of a month: certify the fleet-day, save each deployment's partial; return their paths.

    The day's bundles are ``<fleet_root>/<day>/<deployment>/``; with ``simulate_scale`` a missing
    day is simulated first (``greencert simulate --fleet``). Idempotent: reruns rewrite the same
    work folder, certificates and partial files.
    """
    from greencert.errors import ConfigError
    from greencert.fleet import certify_fleet_day

    start = to_utc(day)
    folder = Path(fleet_root) / f"{start:%Y-%m-%d}"
    if not (folder / INDEX_NAME).is_file():
        if simulate_scale is None:
            raise ConfigError("no fleet-day bundles for this day (fleet.json missing)", str(folder))
        # Here, not at the top: the simulator's numpy and pyarrow would delay every fleet run's start.
        from greencert.sources.fleet import FleetSpec, write_fleet_day

        write_fleet_day(FleetSpec(scale=simulate_scale), start, Path(fleet_root))
    run = certify_fleet_day(
        deployment_bundles(folder),
        registry,
        Path(work_root) / f"{start:%Y-%m-%d}",
        scheme_path,
        pdf=False,
        partials_dir=partials_root,
    )
    log.info(
        "fleet-day %s: %d certificates, %d failures, %s rows, phases %s",
        f"{start:%Y-%m-%d}",
        len(run.certificates),
        len(run.failures),
        f"{run.rows:,}",
        {k: round(v, 2) for k, v in run.seconds.items()},
    )
    for deployment, reason in run.failures.items():
        log.warning("fleet-day %s: %s not certified: %s", f"{start:%Y-%m-%d}", deployment, reason)
    return run.partials


def certify_month_task(
    partials_root: str | Path,
    start: Any,
    end: Any,
    registry: str | Path,
    work_root: str | Path,
    scheme_path: str | Path | None = None,
    signing_key: str | Path | None = None,
) -> dict[str, str]:
    """Certify each deployment's period [start, end) from its day partials (one certificate each).

    A deployment missing a day (not certified that day) gets no certificate: the error names the
    day. Returns deployment -> certificate path; raises after trying every deployment if any failed.
    """
    from greencert.pipeline import _scheme, grade_stage, period_stage, publish_stage

    scheme = _scheme(scheme_path)
    days = days_of(start, end)
    key = interval_key(to_utc(start), to_utc(end))
    certificates: dict[str, str] = {}
    failures: dict[str, str] = {}
    for folder in sorted(p for p in Path(partials_root).iterdir() if p.is_dir()):
        paths = [folder / f"{day}.json" for day in days]
        missing = [p.stem for p in paths if not p.is_file()]
        if len(missing) == len(paths):
            continue  # not a deployment of this period
        if missing:
            failures[folder.name] = f"no partial for {len(missing)} day(s), first {missing[0]}"
            continue
        try:
            work = Path(work_root) / "month" / key / folder.name
            work.mkdir(parents=True, exist_ok=True)
            validation_path, figures_path = period_stage(paths, work, scheme.path)
            graded = grade_stage(figures_path, work, scheme.path)
            # The evidence copied beside the certificate: this period's partials only.
            certificates[folder.name] = publish_stage(
                graded, folder, validation_path, registry, signing_key, pdf=False, index=False
            )
        except GreenCertError as exc:
            failures[folder.name] = str(exc)
    if certificates:
        from greencert.certificate.registry import rebuild_index
        from greencert.files import registry_root

        rebuild_index(registry_root(registry), signing_key=signing_key)
    if failures:
        raise GreenCertError(
            f"{len(failures)} deployment(s) without a certificate for {key}: "
            + "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())),
            str(partials_root),
        )
    return certificates

"""The Airflow asset that every certificate publication updates.

One asset for the whole registry: each mapped ``publish`` task instance emits
one event on it, carrying the certificate's id, grade and key figures as event
metadata (what the UI's asset view shows). The registry-index DAG is scheduled
on this asset, and the certificates page looks up "which DAG run issued this
certificate" in these events, so run ids never enter the signed certificate.

Only ``airflow.sdk`` is imported here: DAG files import this module at parse time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import Asset

CERTIFICATES_ASSET_NAME = "greencert_certificates"

CERTIFICATES = Asset(
    name=CERTIFICATES_ASSET_NAME,
    # A private scheme: the registry's location is deployment configuration, not
    # part of the asset's identity (the same asset whether the registry is a
    # local folder, a volume or a bucket).
    uri="x-greencert://registry/certificates",
    group="greencert",
    extra={"description": "Published GreenCert certificates (one event per certificate)"},
)


def certificate_event_extra(cert_path: str | Path, registry: str | Path) -> dict[str, Any]:
    """Asset-event metadata for one published certificate: identity, grade and key figures.

    Values are read back from the published (canonical) certificate file, so the
    event says exactly what the certificate says.
    """
    cert = json.loads(Path(cert_path).read_bytes())
    metrics = cert.get("metrics", {})

    def value(name: str) -> float | None:
        entry = metrics.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    registry_path = Path(registry).resolve()
    return {
        "certificate_id": cert["certificate_id"],
        "site": cert["scope"]["site"],
        "deployment": cert["scope"]["deployment"],
        "model": cert["scope"].get("model"),
        "period_start": cert["period"]["start"],
        "period_end": cert["period"]["end"],
        "grade": cert.get("grade"),
        "confirmed_grade": cert.get("confirmed_grade"),
        "measurement_class": cert.get("measurement_class"),
        "energy_kwh_per_mtok": value("energy_per_million_tokens"),
        "carbon_gco2e_per_mtok": value("carbon_per_million_tokens"),
        "facility_energy_kwh": value("facility_energy"),
        "output_tokens": value("output_tokens"),
        "coverage": (cert.get("data_quality") or {}).get("coverage"),
        "registry": str(registry_path),
        "certificate": Path(cert_path).resolve().relative_to(registry_path).as_posix(),
    }

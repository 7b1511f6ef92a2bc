"""The certificate document: a pure function of the graded figures.

No wall-clock time goes in: the issue time is the end of the certified period
and expiry follows from the scheme, so the same bundle always gives the same
bytes. The file is published in RFC 8785 canonical JSON.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import rfc8785

from greencert import __version__
from greencert.times import compact, stamp, to_utc

FORMAT = "greencert-certificate/1"


def certificate_id(site: str, deployment: str, start: dt.datetime, end: dt.datetime) -> str:
    """Deterministic id from scope and period: a rerun of a period replaces, never duplicates.

    Unambiguous because a site name has no '.' (greencert.names.check_site) and the period part
    has none: the id splits at its first dot (site) and its last dot (period) in one way only.
    Certificates issued before that rule keep their ids (they are inside the signed bytes).
    """
    return f"{site}.{deployment}.{compact(start)}-{compact(end)}"


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    days = [
        31,
        29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ]
    return moment.replace(year=year, month=month, day=min(moment.day, days[month - 1]))


# Scope fields that describe the measured software/hardware stack (recorded where known).
STACK_FIELDS = (
    "serving_engine",
    "engine_version",
    "model",
    "precision",
    "gpu_type",
    "gpu_count",
    "driver_version",
    "hardware",
)


def build_certificate(graded: dict[str, Any], signing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the certificate from the graded stage's output (see pipeline.grade_stage).

    ``signing`` (from ``sign.SigningKey.signing_section``) names the key that will
    sign the canonical bytes; it is part of the signed document.
    """
    scope = graded["scope"]
    start = to_utc(graded["period"]["start"])
    end = to_utc(graded["period"]["end"])
    cert_id = certificate_id(scope["site"], scope["deployment"], start, end)
    cert: dict[str, Any] = {
        "certificate_format": FORMAT,
        "certificate_id": cert_id,
        "scheme": graded["scheme"],
        "scope": scope,
        "period": {"start": stamp(start), "end": stamp(end)},
        "issued_at": stamp(end),
        "valid_until": stamp(add_months(end, int(graded["validity_months"]))),
        "metrics": graded["metrics"],
        "grade": graded["grading"]["overall"],
        "grading": graded["grading"],
        "methodology": graded["methodology"],
        "data_quality": graded["data_quality"],
        "hourly": graded["hourly"],
        "inputs": graded["inputs"],
        "evidence": {"bundle": f"{cert_id}.evidence"},
        "software": {"greencert": __version__},
    }
    grading = graded["grading"]
    if "confirmed" in grading:
        # 2026.3+: three separate statements (docs/methodology.md, "What a letter says").
        cert["confirmed_grade"] = grading["confirmed"]["overall"]
    if "measurement" in grading:
        cert["measurement_class"] = grading["measurement"]["class"]
    sections = ("software_stack", "carbon", "uncertainty", "reconciliation", "load_regime", "findings")
    for key in (*sections, "boundary", "water", "per_query"):
        if key in graded:
            cert[key] = graded[key]
    if "software_stack" not in cert:
        # What was measured, as declared in the bundle's scope; absent fields were not known.
        cert["software_stack"] = {k: scope[k] for k in STACK_FIELDS if scope.get(k) is not None}
    if signing is not None:
        cert["signing"] = signing
    return cert


def canonical_bytes(document: dict[str, Any]) -> bytes:
    """RFC 8785 canonical JSON: the exact bytes that are published (and signed)."""
    return rfc8785.dumps(document)

"""UTC times: the one place that parses and formats them (a leaf module: standard library only).

Certificates, manifests, partials and registry files write instants as ``2026-01-01T00:00:00Z``
(:func:`stamp`); ids and work folders use the compact minute form ``20260101T0000Z``
(:func:`compact`). Reading accepts RFC 3339 with ``Z`` or an offset; a time without a zone is
taken as UTC only where the caller says so (:func:`to_utc`), never silently as local time.
"""

from __future__ import annotations

import datetime as dt

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
COMPACT_FORMAT = "%Y%m%dT%H%MZ"


def to_utc(value: str | dt.datetime) -> dt.datetime:
    """A time from Airflow (aware datetime or ISO text) or from a file, in UTC; no zone means UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def stamp(moment: dt.datetime) -> str:
    """``2026-01-01T00:00:00Z``: whole seconds, UTC, the certificate format's instants."""
    return moment.astimezone(dt.UTC).strftime(STAMP_FORMAT)


def compact(moment: dt.datetime) -> str:
    """``20260101T0000Z``: the minute form of certificate ids and work folders."""
    return moment.astimezone(dt.UTC).strftime(COMPACT_FORMAT)


def interval_key(start: dt.datetime, end: dt.datetime) -> str:
    """``20260101T0000Z_20260102T0000Z``: the folder name of one data interval's work files."""
    return f"{compact(start)}_{compact(end)}"


def stamp_ms(seconds: float) -> str:
    """``2026-01-01T00:00:15.000Z``: milliseconds always, Prometheus' own resolution (pull reports)."""
    moment = dt.datetime.fromtimestamp(round(seconds * 1000) / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stamp_exact(seconds: float) -> str:
    """``2026-01-01T00:00:00Z``, or ``...00:15.250Z`` when the time has milliseconds (messages)."""
    moment = dt.datetime.fromtimestamp(round(seconds * 1000) / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds").replace(
        "+00:00", "Z"
    )

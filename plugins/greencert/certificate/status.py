"""The status vocabulary people see, and the one function that derives it from a registry row.

Contract (a leaf module: it imports nothing from greencert, so every page and command may use it):

* A *registry row* is a dict from :func:`greencert.certificate.registry.list_certificates` (also
  the ``certificates`` list of ``index.json`` and the rows of the Airflow page). It carries

  - ``row["status"]``: the *checked* status, one of :data:`REGISTRY_STATUSES`
    (``valid``, ``superseded``, ``expired``, ``revoked``, ``unverified``), evaluated against the
    registry's signed metadata under keys the reader trusts;
  - ``row["development_key"]``: ``True`` when the certificate says it was signed with an
    installation's development key (not an issued certificate), else ``False``;
  - ``row["size_class"]``: the grading scheme's model-size class the bands came from
    (e.g. ``"<=20B"``), or ``None`` for a certificate that does not record one;
  - ``row["verification"]`` (``"ok"`` or why the row is unverified), ``row["revocation"]``
    (``{"reason", "revoked_at"}`` or ``None``), ``row["superseded_by"]``, ``row["valid_until"]``.

* :func:`display_status` turns a row into one of :data:`DISPLAY_STATUSES`, the only words any
  page, label or command shows for a status::

      valid, development key, superseded, expired, revoked, unverified

  ``development key`` replaces ``valid`` only: every other status is the stronger statement
  (an expired development-key certificate is ``expired``; :func:`status_detail` still says
  "development key"). An unknown ``row["status"]`` is shown as ``unverified`` (fail closed).

* :data:`MEANINGS` gives each displayed status one plain sentence; :func:`css_class` a stable
  HTML class (``status-development-key``); :func:`status_text` the one-line text form used by
  ``greencert summary``, ``greencert registry list`` and ``greencert verify``;
  :func:`size_class_text` how a size class is printed (``"-"`` when unknown).

* Grades (scheme 2026.3+): ``row["grade"]`` is the efficiency grade, ``row["confirmed_grade"]`` the
  grade confirmed at 95 % confidence and ``row["measurement_class"]`` what was metered (one of
  :data:`MEASUREMENT_CLASSES`); both are ``None`` for older certificates. :func:`grade_text`
  prints ``B (confirmed C)`` (or just ``B`` when they agree or the certificate has one letter),
  :func:`measurement_text` the class in words (``-`` when unknown).

* :func:`verify_status` maps the outcome of ``greencert verify`` (its failure reason code from
  ``greencert.certificate.verify.EXIT_CODES``, or ``None`` on success) to the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

VALID = "valid"
DEVELOPMENT_KEY = "development key"
SUPERSEDED = "superseded"
EXPIRED = "expired"
REVOKED = "revoked"
UNVERIFIED = "unverified"

# What list_certificates() writes into row["status"] (machine values of index.json; unchanged).
REGISTRY_STATUSES = (VALID, SUPERSEDED, EXPIRED, REVOKED, UNVERIFIED)

# What people see, best first (the order of filters, legends and counts).
DISPLAY_STATUSES = (VALID, DEVELOPMENT_KEY, SUPERSEDED, EXPIRED, REVOKED, UNVERIFIED)

MEANINGS = {
    VALID: "Issued under a trusted key, listed in the registry's signed status, current and not revoked.",
    DEVELOPMENT_KEY: (
        "Signed with this installation's development key: a test certificate, not an issued one."
    ),
    SUPERSEDED: "A newer certificate of the same deployment replaces it; its figures still verify.",
    EXPIRED: "Past its validity (6 months after its period): the figures are no longer certified.",
    REVOKED: "The issuer withdrew it; the registry's signed status records when and why.",
    UNVERIFIED: (
        "It does not check against the registry's signed metadata under keys you trust: "
        "treat its grade as a claim."
    ),
}


def display_status(row: Mapping[str, Any]) -> str:
    """The status to show for a registry row (see the module docstring for the precedence)."""
    status = row.get("status")
    if status not in REGISTRY_STATUSES:
        return UNVERIFIED
    if status == VALID and row.get("development_key"):
        return DEVELOPMENT_KEY
    return str(status)


def status_detail(row: Mapping[str, Any]) -> str | None:
    """A short reason beside the status (why unverified, revocation reason, replaced by, dev key), or None."""
    shown = display_status(row)
    if shown == UNVERIFIED:
        why = row.get("verification")
        return str(why) if why and why != "ok" else None
    if shown == REVOKED:
        revocation = row.get("revocation") or {}
        return str(revocation["reason"]) if revocation.get("reason") else None
    parts = []
    if shown == SUPERSEDED and row.get("superseded_by"):
        parts.append(f"by {row['superseded_by']}")
    if shown == EXPIRED and row.get("valid_until"):
        parts.append(f"since {row['valid_until']}")
    if shown != DEVELOPMENT_KEY and row.get("development_key"):
        parts.append(DEVELOPMENT_KEY)
    return "; ".join(parts) or None


def status_text(row: Mapping[str, Any]) -> str:
    """``status`` or ``status (detail)``: the plain-text form for the command line."""
    detail = status_detail(row)
    shown = display_status(row)
    return f"{shown} ({detail})" if detail else shown


def css_class(status: str) -> str:
    """A stable HTML class for a displayed status, e.g. ``status-development-key``."""
    return "status-" + (status if status in DISPLAY_STATUSES else UNVERIFIED).replace(" ", "-")


def size_class_text(row: Mapping[str, Any]) -> str:
    """The size class as printed in tables (``-`` when the certificate records none)."""
    return str(row.get("size_class") or "-")


def counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many rows show each displayed status (every status present, zeros included)."""
    out = dict.fromkeys(DISPLAY_STATUSES, 0)
    for row in rows:
        out[display_status(row)] += 1
    return out


# greencert verify's failure reasons that have a status word of their own; any other failure
# means the certificate could not be checked, i.e. "unverified".
_VERIFY_REASONS = {"expired": EXPIRED, "revoked": REVOKED, "development-key": DEVELOPMENT_KEY}


def verify_status(reason: str | None, development_key: bool = False) -> str:
    """The displayed status for a ``greencert verify`` outcome (``reason`` None = every check passed)."""
    if reason is None:
        return DEVELOPMENT_KEY if development_key else VALID
    return _VERIFY_REASONS.get(reason, UNVERIFIED)


# What was metered (certificate ``measurement_class``, best first), in the words of the label.
MEASUREMENT_CLASSES = {
    "facility": "facility and PDU meters",
    "pdu": "PDU or revenue meters",
    "node": "node meters",
    "gpu_only": "GPU sensors only",
    "estimated": "meter class not declared",
}


def grade_text(row: Mapping[str, Any]) -> str:
    """``B (confirmed C)`` when the confirmed grade differs from the (efficiency) grade, else ``B``."""
    grade = str(row.get("grade") or "-")
    confirmed = row.get("confirmed_grade")
    if confirmed and confirmed != row.get("grade"):
        return f"{grade} (confirmed {confirmed})"
    return grade


def measurement_text(row: Mapping[str, Any]) -> str:
    """The measurement class in words (``-`` for certificates that state none)."""
    name = row.get("measurement_class")
    if not name:
        return "-"
    return MEASUREMENT_CLASSES.get(str(name), str(name))

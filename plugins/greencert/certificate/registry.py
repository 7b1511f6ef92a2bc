"""The public registry: published certificates, their index, the issuer key and the revocation list.

Layout (all names derive from validated identifiers; see ``safe_child``)::

    <registry>/
      index.json                 machine-readable list of every certificate (regenerated after each publish)
      index.html                 sortable table linking to each label
      issuer.pem                 public key of the current issuer (Ed25519, SubjectPublicKeyInfo PEM)
      keys/<key_id>.pem          every issuer key that ever signed a certificate here
      revocations.json (+ .sig)  revocation list, RFC 8785 canonical, signed by the issuer
      <site>/<deployment>/
        <certificate_id>.json        the certificate, RFC 8785 canonical bytes (exactly what is signed)
        <certificate_id>.json.sig    raw 64-byte Ed25519 signature of those bytes
        <certificate_id>.issuer.pem  the public key that signed it
        <certificate_id>.html        human label (self-contained)
        <certificate_id>.pdf         the same label as PDF (when Chromium is available)
        <certificate_id>.validation.json, <certificate_id>.evidence/   evidence for `greencert verify`
        <certificate_id>.reports/    SCI, EU EED and GB 40879 reports

The index is derived data: it is rebuilt from the certificate files, so it can
always be regenerated (``greencert registry rebuild``) and never disagrees with them.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from greencert.errors import ConfigError

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
ISSUER_PEM = "issuer.pem"
KEYS_DIR = "keys"
REVOCATIONS = "revocations.json"
INDEX_FORMAT = "greencert-registry-index/1"
REVOCATIONS_FORMAT = "greencert-revocations/1"

# Status precedence: a revoked certificate is revoked whatever else holds; an
# expired one is no longer valid even if nothing replaced it.
STATUSES = ("valid", "superseded", "expired", "revoked")


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def registry_root(target: str | Path) -> Path:
    """The registry as a path object: a local ``Path``, or a ``UPath`` for any fsspec URL.

    ``s3://bucket/registry``, ``gs://...``, ``memory://...``, ``file://...`` and
    Airflow's ``ObjectStoragePath`` (a UPath) all work; a plain path stays local.
    """
    if hasattr(target, "protocol") and hasattr(target, "fs"):
        return target  # type: ignore[return-value]  # UPath / ObjectStoragePath
    text = str(target)
    if "://" in text:
        from upath import UPath

        return UPath(text)
    return Path(text)


def is_local(root: Path) -> bool:
    """Local folders get rename-based atomic writes; object stores write whole objects at once."""
    return not hasattr(root, "protocol")


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically: temp file + rename locally, a single whole-object PUT on object stores."""
    from greencert.certificate.publish import atomic_write_bytes

    if is_local(path):
        atomic_write_bytes(path, data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def safe_child(registry: Path, *parts: str) -> Path:
    """``registry/part/...`` after checking that the resolved path stays inside ``registry``.

    Site and deployment names are validated identifiers already; this is the
    second line of defence (a symlink or a future caller that skips validation
    must still not write outside the registry).
    """
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
            raise ConfigError(f"unsafe name {part!r} for a registry path", str(registry))
    if not is_local(registry):
        return registry.joinpath(*parts)  # no symlinks in object stores; the names are checked above
    root = Path(registry).resolve()
    target = root.joinpath(*parts).resolve()
    if target != root and root not in target.parents:
        raise ConfigError(f"path {'/'.join(parts)!r} escapes the registry", str(registry))
    return target


def certificate_files(registry: Path) -> list[Path]:
    """Every published certificate JSON (``<site>/<deployment>/<id>.json``), sorted."""
    out = []
    for path in sorted(registry_root(registry).glob("*/*/*.json"), key=str):
        if path.name.startswith(".") or path.name.endswith(".validation.json"):
            continue
        out.append(path)
    return out


def load_revocations(registry: Path) -> dict[str, dict[str, Any]]:
    """Revoked certificate ids -> entry (reason, revoked_at). Empty if there is no list."""
    path = registry_root(registry) / REVOCATIONS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_bytes())
        return {e["certificate_id"]: e for e in data["revoked"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"revocation list is unreadable ({exc!r})", str(path)) from None


def _read_certificate(path: Path) -> dict[str, Any] | None:
    try:
        cert = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(cert, dict) or "certificate_id" not in cert or "certificate_format" not in cert:
        return None
    return cert


def _rel(registry: Path, path: Path) -> str | None:
    return path.relative_to(registry).as_posix() if path.exists() else None


def list_certificates(registry: Path, at: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Summary rows of every certificate in ``registry``, with its status at time ``at`` (default now).

    A certificate is ``superseded`` when a newer one (later period end) exists
    for the same scope (site, deployment); ``expired`` after ``valid_until``;
    ``revoked`` when listed in the revocation list. Paths are relative to the
    registry root (POSIX separators) or None when that file was not published.
    Rows are sorted by site, deployment and period start.
    """
    registry = registry_root(registry)
    at = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    revoked = load_revocations(registry)
    rows: list[dict[str, Any]] = []
    for path in certificate_files(registry):
        cert = _read_certificate(path)
        if cert is None:
            continue
        cid = cert["certificate_id"]
        stem = path.with_suffix("")
        metrics = cert.get("metrics", {})
        signing = cert.get("signing") or {}
        rows.append(
            {
                "certificate_id": cid,
                "site": cert["scope"]["site"],
                "deployment": cert["scope"]["deployment"],
                "model": cert["scope"].get("model"),
                "period": {"start": cert["period"]["start"], "end": cert["period"]["end"]},
                "issued_at": cert.get("issued_at"),
                "valid_until": cert.get("valid_until"),
                "grade": cert.get("grade"),
                "energy_kwh_per_mtok": metrics.get("energy_per_million_tokens", {}).get("value"),
                "carbon_gco2e_per_mtok": metrics.get("carbon_per_million_tokens", {}).get("value"),
                "scheme": cert.get("scheme"),
                "key_id": signing.get("key_id"),
                "development_key": signing.get("development_key"),
                "revocation": revoked.get(cid),
                "superseded_by": None,
                "status": "valid",
                "paths": {
                    "json": _rel(registry, path),
                    "sig": _rel(registry, path.with_name(path.name + ".sig")),
                    "public_key": _rel(registry, stem.with_name(stem.name + ".issuer.pem")),
                    "label": _rel(registry, stem.with_name(stem.name + ".html")),
                    "pdf": _rel(registry, stem.with_name(stem.name + ".pdf")),
                    "reports": _rel(registry, stem.with_name(stem.name + ".reports")),
                },
            }
        )
    # Supersession: within one scope, every certificate but the newest points at the newest.
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["site"], row["deployment"])
        rank = (row["period"]["end"], row["period"]["start"], row["certificate_id"])
        best = newest.get(key)
        if best is None or rank > (best["period"]["end"], best["period"]["start"], best["certificate_id"]):
            newest[key] = row
    for row in rows:
        best = newest[(row["site"], row["deployment"])]
        if best is not row:
            row["superseded_by"] = best["certificate_id"]
        if row["revocation"] is not None:
            row["status"] = "revoked"
        elif row["valid_until"] and _utc(row["valid_until"]) <= at:
            row["status"] = "expired"
        elif row["superseded_by"]:
            row["status"] = "superseded"
    rows.sort(key=lambda r: (r["site"], r["deployment"], r["period"]["start"], r["certificate_id"]))
    return rows


def _issuer_key_id(registry: Path) -> str | None:
    from greencert.certificate.sign import key_id, load_public_key_bytes

    path = registry / ISSUER_PEM
    return key_id(load_public_key_bytes(path.read_bytes(), str(path))) if path.exists() else None


def render_index_html(rows: list[dict[str, Any]], status_at: str) -> str:
    from greencert.certificate.render import GRADE_COLOURS
    from greencert.certificate.templates import template

    return template("registry_index.html.j2").render(rows=rows, status_at=status_at, colours=GRADE_COLOURS)


def rebuild_index(registry: Path, at: dt.datetime | None = None) -> Path:
    """Regenerate ``index.json`` and ``index.html`` from the certificate files (atomic writes).

    Returns the path of ``index.json``. Statuses are evaluated at ``at`` (default now).
    """
    registry = registry_root(registry)
    registry.mkdir(parents=True, exist_ok=True)
    if is_local(registry):
        # Parallel publishers (mapped Airflow tasks) must not overwrite a newer index with
        # an older listing: serialise the list-and-write under an advisory lock.
        import fcntl

        with open(registry / ".index.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # The index is only written under this lock: a temporary of it found now was left by a
            # killed run (hidden, never read, but it should not pile up).
            for stale in (*registry.glob(f".{INDEX_JSON}.*.tmp"), *registry.glob(f".{INDEX_HTML}.*.tmp")):
                stale.unlink(missing_ok=True)
            return _write_index(registry, at)
    return _write_index(registry, at)


def _write_index(registry: Path, at: dt.datetime | None) -> Path:
    from greencert.certificate.build import stamp

    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    rows = list_certificates(registry, moment)
    index = {
        "format": INDEX_FORMAT,
        "status_at": stamp(moment),
        "issuer_public_key": ISSUER_PEM if (registry / ISSUER_PEM).exists() else None,
        "issuer_key_id": _issuer_key_id(registry),
        "revocation_list": REVOCATIONS if (registry / REVOCATIONS).exists() else None,
        "counts": {s: sum(r["status"] == s for r in rows) for s in STATUSES},
        "certificates": rows,
    }
    index_path = registry / INDEX_JSON
    # The HTML goes first: index.json is what machines poll, and it must never
    # announce a certificate whose row the page does not yet show.
    write_file(registry / INDEX_HTML, render_index_html(rows, index["status_at"]).encode())
    write_file(index_path, json.dumps(index, indent=1, sort_keys=True).encode())
    return index_path


def revoke(
    registry: Path,
    certificate_id: str,
    reason: str,
    signing_key: str | Path | None = None,
    at: dt.datetime | None = None,
) -> Path:
    """Add ``certificate_id`` to the signed revocation list and regenerate the index.

    Revoking twice keeps the first entry (its time and reason stand). The list
    is RFC 8785 canonical JSON signed like a certificate (``revocations.json.sig``),
    with the issuer key; ``greencert verify`` checks that signature before trusting it.
    """
    from greencert.bundle.manifest import check_label
    from greencert.certificate.build import stamp
    from greencert.certificate.sign import load_signing_key

    root = registry_root(registry)
    try:
        reason = check_label(reason.strip(), "revocation reason")
    except ValueError as exc:
        raise ConfigError(str(exc), "--reason") from None
    if not reason:
        raise ConfigError("a revocation needs a reason", "--reason")
    known = {r["certificate_id"] for r in list_certificates(root)}
    if certificate_id not in known:
        raise ConfigError(f"no certificate {certificate_id!r} in this registry", str(root))
    key = load_signing_key(signing_key)
    entries = load_revocations(root)
    if certificate_id not in entries:
        moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        entries[certificate_id] = {
            "certificate_id": certificate_id,
            "reason": reason,
            "revoked_at": stamp(moment),
        }
    path = write_revocations(root, entries, key)
    rebuild_index(root)
    return path


def write_revocations(root: Path, entries: dict[str, dict[str, Any]], key: Any) -> Path:
    """Write the signed revocation list (signature first, like a certificate)."""
    from greencert.certificate.build import canonical_bytes

    document = {
        "format": REVOCATIONS_FORMAT,
        "signing": key.signing_section(),
        "revoked": [entries[k] for k in sorted(entries)],
    }
    body = canonical_bytes(document)
    write_file(root / KEYS_DIR / f"{key.key_id}.pem", key.public_pem)
    write_file(root / (REVOCATIONS + ".sig"), key.sign(body))
    write_file(root / REVOCATIONS, body)
    return root / REVOCATIONS

"""The public registry: published certificates, their index, the issuer key and the revocation list.

Layout (all names derive from validated identifiers; see ``safe_child``)::

    <registry>/
      index.json                 machine-readable list of every certificate (regenerated after each publish)
      index.html                 sortable table linking to each label
      issuer.pem                 public key of the current issuer (informative: never trusted from here)
      keys/<key_id>.pem          every issuer key that ever signed a certificate here (informative)
      metadata/                  TUF metadata: root, targets (every certificate's hash and status,
                                 revocations included), snapshot, timestamp (greencert.trust.metadata)
      log/                       the Merkle issuance log and its signed tree heads (greencert.trust.log)
      <site>/<deployment>/
        <certificate_id>.json        the certificate, RFC 8785 canonical bytes (exactly what is signed)
        <certificate_id>.json.sig    raw 64-byte Ed25519 signature of those bytes
        <certificate_id>.issuer.pem  the public key that signed it (informative)
        <certificate_id>.log.json    its issuance-log entry, signed tree head and inclusion proof
        <certificate_id>.html        human label (self-contained)
        <certificate_id>.pdf         the same label as PDF (when Chromium is available)
        <certificate_id>.validation.json, <certificate_id>.evidence/   evidence for `greencert verify`
        <certificate_id>.reports/    SCI, EU EED and GB 40879 reports

The index is derived data: it is rebuilt from the certificate files, and every row's status is
checked against the registry's signed metadata under keys the reader trusts; anything that does
not verify is listed as ``unverified``, never as valid.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from greencert.errors import ConfigError, PublishError
from greencert.files import (
    Conflict,
    conditional,
    is_local,
    read_tagged,
    read_whole,
    registry_root,
    shared_lock,
    write_file,
)

if TYPE_CHECKING:
    from upath import UPath

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
ISSUER_PEM = "issuer.pem"
KEYS_DIR = "keys"
INDEX_FORMAT = "greencert-registry-index/1"

# Status precedence: a revoked certificate is revoked whatever else holds; an
# expired one is no longer valid even if nothing replaced it.
STATUSES = ("valid", "superseded", "expired", "revoked", "unverified")
LOCK = ".index.lock"
# Registry-wide folders (names no site may take: greencert.names refuses them)
REGISTRY_FOLDERS = (KEYS_DIR, "metadata", "log")


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


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
        if path.name.startswith(".") or path.name.endswith((".validation.json", ".log.json")):
            continue
        if path.parent.parent.name in REGISTRY_FOLDERS and path.parent.parent.parent == registry_root(registry):
            continue  # the issuance log's tree heads (log/tree-heads/N.json) are not certificates
        out.append(path)
    return out


def target_path(cert: dict[str, Any]) -> str:
    """Where a certificate lives in the registry, from its own signed content (not from where it was found)."""
    return f"{cert['scope']['site']}/{cert['scope']['deployment']}/{cert['certificate_id']}.json"


def _read_certificate(raw: bytes) -> dict[str, Any] | None:
    try:
        cert = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(cert, dict) or "certificate_id" not in cert or "certificate_format" not in cert:
        return None
    try:
        target_path(cert)
    except (KeyError, TypeError):
        return None
    return cert


def _rel(registry: Path, path: Path, names: set[str] | None = None) -> str | None:
    rel = path.relative_to(registry).as_posix()
    if names is not None:  # an object store's listing, made once (not one request per file)
        return rel if rel in names else None
    return rel if path.exists() else None


def _fetch_all(registry: Path, paths: list[Path], names: set[str] | None) -> dict[str, bytes] | None:
    """Object stores: every certificate and signature of ``paths`` in one concurrent batch of GETs
    (file name -> bytes; names are unique: they contain site, deployment and period). None locally."""
    if names is None:
        return None
    wanted = [p for path in paths for p in (path, path.with_name(path.name + ".sig"))]
    wanted = [p for p in wanted if p.relative_to(registry).as_posix() in names]
    if not wanted:
        return {}
    # Not local, so a UPath (greencert.files.registry_root): fsspec's filesystem and object keys.
    objects = [cast("UPath", p) for p in wanted]
    fetched = cast("UPath", registry).fs.cat([p.path for p in objects], on_error="omit")
    by_path = {p.path: p.name for p in objects}
    return {by_path[k]: v for k, v in fetched.items() if k in by_path}


def _object_names(registry: Path) -> set[str] | None:
    """Relative names of every object (and folder prefix) of an object-store registry; None locally."""
    if is_local(registry):
        return None
    store = cast("UPath", registry)  # not local: a UPath (greencert.files.registry_root)
    base = store.path.rstrip("/")
    names: set[str] = set()
    for name in store.fs.find(base, withdirs=True):
        rel = name[len(base) + 1 :] if name.startswith(base + "/") else name
        names.add(rel)
        parts = rel.split("/")
        for i in range(1, len(parts)):
            names.add("/".join(parts[:i]))
    return names


def check_listed(
    view: Any, rel: str, raw: bytes, cert: dict[str, Any], sig_path: Path, signature: bytes | None = None
) -> tuple[dict | None, str | None]:
    """(signed status, None) when the certificate verifies against the trusted metadata, else (None, why)."""
    import hashlib

    from greencert.certificate.sign import signature_valid

    if rel != target_path(cert):
        return None, f"found at {rel}, but it names {target_path(cert)}"
    status = view.status_of(rel)
    if status is None:
        return None, "not listed in the registry's signed metadata"
    target = view.targets[rel]
    if target.length != len(raw) or target.hashes.get("sha256") != hashlib.sha256(raw).hexdigest():
        return None, "its bytes differ from those the registry's signed metadata lists"
    kid = (cert.get("signing") or {}).get("key_id")
    public = view.issuer_keys.get(kid)
    if public is None:
        return None, f"signed by key {kid}, which the registry's root does not authorise"
    try:
        signature = read_whole(sig_path) if signature is None else signature
    except OSError:
        return None, "signature file missing"
    if not signature:
        return None, "signature file missing"
    if not signature_valid(public, signature, raw):
        return None, "signature does not verify"
    return status, None


def list_certificates(
    registry: Path, at: dt.datetime | None = None, anchors: list[Any] | None = None
) -> list[dict[str, Any]]:
    """Summary rows of every certificate in ``registry``, with its status at time ``at`` (default now).

    Each row is checked against the registry's TUF metadata, opened with python-tuf's client from a
    root signed by one of ``anchors`` (default: the user's trust store). A certificate that is not
    listed there, differs from what is listed, or whose signature does not verify is ``unverified``
    (``verification`` says why) and takes no part in supersession. Otherwise: ``revoked`` (signed
    status), ``expired`` (past ``valid_until``), ``superseded`` (a newer verified period of the same
    site and deployment; ``superseded_by`` names it), else ``valid``. Rows are sorted by site,
    deployment and period start; paths are relative to the registry root.
    """
    from greencert.trust.metadata import StatusError, open_trusted
    from greencert.trust.store import resolve_anchors

    registry = registry_root(registry)
    at = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    if anchors is None:
        anchors = resolve_anchors()
    # Optimistic read, then (only if what was read does not agree: a publication in flight) again:
    # locally under the registry lock held shared, so between two commits; on an object store
    # after a short pause, a few times. A row that still disagrees is shown as it is (unverified).
    attempts = 1 if getattr(_held, "registry", None) == str(registry) else READ_ATTEMPTS
    for attempt in range(attempts):
        last = attempt == attempts - 1
        if attempt and not is_local(registry):
            import time

            time.sleep(0.05 * 3**attempt)
        with shared_lock(registry / LOCK) if attempt and is_local(registry) else contextlib.nullcontext():
            rows, settled = _checked_rows(registry, at, anchors, open_trusted, StatusError)
        if settled or last:
            return rows
    return rows


READ_ATTEMPTS = 4
# Problems a publication in flight shows for a moment (a certificate not yet listed, its old version
# withdrawn, a signature renamed just before its certificate): worth reading again.
_IN_FLIGHT = ("not listed in", "bytes differ", "signature file missing", "signature does not verify")
_held = threading.local()  # .registry: this thread holds the registry lock exclusive (registry_lock)


def _checked_rows(
    registry: Path, at: dt.datetime, anchors: list[Any], open_trusted: Any, StatusError: Any
) -> tuple[list[dict[str, Any]], bool]:
    """The rows, and whether the files and the signed metadata read agree (nothing in flight)."""
    view, registry_problem = None, None
    try:
        view = open_trusted(registry, anchors, cache=False)
    except StatusError as exc:
        registry_problem = f"{exc.reason}: {exc.problem}"
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    if getattr(registry, "protocol", None) in ("http", "https"):
        # A web server need not list folders: the certificates are those the signed targets name
        # (a file dropped in beside them cannot be found over HTTP, nor shown as unverified).
        names, paths = None, [registry / rel for rel in sorted(view.targets)] if view is not None else []
    else:
        names = _object_names(registry)
        paths = certificate_files(registry)
    blobs = _fetch_all(registry, paths, names)
    for path in paths:
        try:
            raw = blobs[path.name] if blobs is not None else read_whole(path)
        except (OSError, KeyError):
            continue
        cert = _read_certificate(raw)
        if cert is None:
            continue
        cid = cert["certificate_id"]
        stem = path.with_suffix("")
        metrics = cert.get("metrics") or {}
        signing = cert.get("signing") or {}
        rel = path.relative_to(registry).as_posix()
        seen.add(rel)
        sig_path = path.with_name(path.name + ".sig")
        if view is None:
            signed, problem = None, registry_problem
        else:
            signed, problem = check_listed(
                view, rel, raw, cert, sig_path, None if blobs is None else blobs.get(sig_path.name, b"")
            )
        revoked = signed is not None and signed.get("status") == "revoked"
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
                # 2026.3+: the grade confirmed at 95 % and what was metered (None before).
                "confirmed_grade": cert.get("confirmed_grade"),
                "measurement_class": cert.get("measurement_class"),
                "energy_kwh_per_mtok": (metrics.get("energy_per_million_tokens") or {}).get("value"),
                "carbon_gco2e_per_mtok": (metrics.get("carbon_per_million_tokens") or {}).get("value"),
                "scheme": cert.get("scheme"),
                "key_id": signing.get("key_id"),
                "development_key": bool(signing.get("development_key")),
                "size_class": (cert.get("grading") or {}).get("size_class"),
                "revocation": (
                    {"reason": signed.get("reason"), "revoked_at": signed.get("revoked_at")}
                    if revoked and signed is not None
                    else None
                ),
                "verification": problem or "ok",
                "superseded_by": None,
                "status": "unverified" if problem else "valid",
                "paths": {
                    "json": rel,
                    "sig": _rel(registry, sig_path, names),
                    "public_key": _rel(registry, stem.with_name(stem.name + ".issuer.pem"), names),
                    "log_proof": _rel(registry, stem.with_name(stem.name + ".log.json"), names),
                    "label": _rel(registry, stem.with_name(stem.name + ".html"), names),
                    "pdf": _rel(registry, stem.with_name(stem.name + ".pdf"), names),
                    "reports": _rel(registry, stem.with_name(stem.name + ".reports"), names),
                    "data_docs": _rel(registry, stem.with_name(stem.name + ".datadocs") / "index.html", names),
                },
            }
        )
    # Supersession among verified certificates only: a dropped-in file must not retire a real one.
    verified = [r for r in rows if r["status"] != "unverified"]
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in verified:
        key = (row["site"], row["deployment"])
        rank = (row["period"]["end"], row["period"]["start"], row["certificate_id"])
        best = newest.get(key)
        if best is None or rank > (best["period"]["end"], best["period"]["start"], best["certificate_id"]):
            newest[key] = row
    for row in verified:
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
    # A failed metadata fetch (a version pruned while it was read, under heavy publication) is
    # read again too; a real defect stays and is reported as it is.
    settled = not (registry_problem or "").startswith("status-unknown") and not any(any(k in r["verification"] for k in _IN_FLIGHT) for r in rows)
    if view is not None and settled:
        # A listed, issued certificate whose file is absent: withdrawn for a re-publication, or
        # listed and not yet written (object stores write it right after the metadata).
        settled = not _any_missing_is_recent(registry, view, seen, names)
    return rows, settled


def _any_missing_is_recent(registry: Path, view: Any, seen: set[str], names: set[str] | None) -> bool:
    """Whether a listed certificate file is missing although its companions are there (in flight);
    a certificate deleted on purpose (all its files gone) is not waited for."""
    for rel in view.targets:
        if rel in seen:
            continue
        stem = rel.removesuffix(".json")
        try:
            if _rel(registry, registry / f"{rel}.sig", names) or _rel(registry, registry / f"{stem}.html", names):
                return True
        except OSError:
            continue
    return False


def render_index_html(rows: list[dict[str, Any]], status_at: str, trust: dict[str, Any]) -> str:
    from greencert.certificate import status
    from greencert.certificate.render import GRADE_COLOURS
    from greencert.certificate.templates import template

    return template("registry_index.html.j2").render(
        rows=rows, status_at=status_at, colours=GRADE_COLOURS, trust=trust, status=status
    )


@contextlib.contextmanager
def registry_lock(registry: Path) -> Generator[None, None, None]:
    """Serialise registry-wide writes (index, trust metadata, log) of local registries."""
    if not is_local(registry):
        yield
        return
    import fcntl

    if getattr(_held, "registry", None) == str(registry):  # re-entered by its holder (publication + index)
        yield
        return
    registry.mkdir(parents=True, exist_ok=True)
    with open(registry / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held.registry = str(registry)
        try:
            yield
        finally:
            _held.registry = None


# Hidden temporaries of registry-wide files: written only under the registry lock, so any found
# by the lock's holder was left by a killed run (the index's: under the index-write lock).
_INDEX_TEMPORARIES = (f".{INDEX_JSON}.*.tmp", f".{INDEX_HTML}.*.tmp")
_SHARED_TEMPORARIES = (
    "metadata/.*.tmp",
    "log/.*.tmp",
    "log/tree-heads/.*.tmp",
    f".{ISSUER_PEM}.*.tmp",
    f"{KEYS_DIR}/.*.tmp",
)
COMMIT_ATTEMPTS = 40  # compare-and-swap rounds on an object store before giving up (each re-reads)


def remove_shared_temporaries(registry: Path) -> None:
    """Caller holds the registry lock (local registries): remove what killed runs left."""
    if not is_local(registry):
        return
    for pattern in _SHARED_TEMPORARIES:
        for stale in registry.glob(pattern):
            stale.unlink(missing_ok=True)


def rebuild_index(registry: Path, at: dt.datetime | None = None, signing_key: Any = None) -> Path:
    """Regenerate ``index.json`` and ``index.html`` (atomic writes); return the path of ``index.json``.

    With ``signing_key`` (the issuer's), first bring the trust metadata and the issuance log up to
    date with the certificate files (:func:`update_trust`), and check the rows against that key;
    without it, rows are checked against the user's trust store. Statuses are evaluated at ``at``.
    """
    registry = registry_root(registry)
    registry.mkdir(parents=True, exist_ok=True)
    anchors = None
    with registry_lock(registry):
        remove_shared_temporaries(registry)
        if signing_key is not None:
            from greencert.certificate.sign import load_signing_key

            key = load_signing_key(signing_key)
            update_trust(registry, key)
            anchors = _issuer_anchor(key)
    return write_index(registry, at, anchors)


def _write_index(registry: Path, at: dt.datetime | None, anchors: list[Any] | None) -> Path:
    """Write the index; locally under the registry lock, on S3 by compare-and-swap: an index of an
    older signed status never replaces one of a newer (``trust.status_version``)."""
    from greencert.certificate.build import stamp
    from greencert.certificate.status import counts as display_counts
    from greencert.certificate.status import display_status
    from greencert.trust.metadata import StatusError, open_trusted
    from greencert.trust.store import resolve_anchors

    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    anchors = resolve_anchors() if anchors is None else anchors
    try:
        # Opened before the listing: the status version the index records is never newer than the
        # one its rows were checked against (index_after_commit relies on that to skip a rebuild).
        view = open_trusted(registry, anchors, cache=False)
        trust = {
            # Name and key id only: where the checker keeps its trust store is nobody's business.
            "checked_against": f"{view.anchor.name} (key {view.anchor.key_id})",
            "issuer_key_ids": sorted(view.issuer_keys),
            "root_version": view.root_version,
            "status_version": view.timestamp_version,
            "status_expires": stamp(view.status_expires),
            "problem": None,
        }
    except StatusError as exc:
        trust = {"checked_against": None, "problem": f"{exc.reason}: {exc.problem}"}
    rows = list_certificates(registry, moment, anchors)
    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "status_at": stamp(moment),
        "trust": trust,
        "metadata": "metadata/",
        "log": "log/",
        "counts": {s: sum(r["status"] == s for r in rows) for s in STATUSES},
        # What people are shown (greencert.certificate.status): development key replaces valid.
        "display_counts": display_counts(rows),
        "certificates": [{**r, "display_status": display_status(r)} for r in rows],
    }
    index_path = registry / INDEX_JSON
    html = render_index_html(rows, index["status_at"], trust).encode()
    data = json.dumps(index, indent=1, sort_keys=True).encode()
    if not conditional(registry):
        # The HTML goes first: index.json is what machines poll, and it must never
        # announce a certificate whose row the page does not yet show.
        write_file(registry / INDEX_HTML, html)
        write_file(index_path, data)
        return index_path
    # Newer signed status first; for the same status, the listing that found more certificates
    # (one written just after its certificate appeared, against one listed a moment before).
    mine = (trust.get("status_version") or 0, len(rows))
    for _ in range(COMMIT_ATTEMPTS):
        current, tag = read_tagged(index_path)
        if current is not None:
            try:
                document = json.loads(current)
                theirs = ((document.get("trust") or {}).get("status_version") or 0, len(document["certificates"]))
            except (ValueError, KeyError, TypeError):
                theirs = (0, 0)
            if theirs > mine:
                return index_path  # a newer status is indexed already
        write_file(registry / INDEX_HTML, html)
        try:
            from greencert.files import put_if

            put_if(index_path, data, tag, create=current is None)
            return index_path
        except Conflict:
            continue
    return index_path


INDEX_WRITE_LOCK = ".index-write.lock"


def index_after_commit(registry: Path, anchors: list[Any], committed: int, certificate_id: str) -> None:
    """Write the index after a commit of signed status version ``committed``, unless an index of that
    version or a newer one is there already and lists ``certificate_id``. The version alone is not
    enough on object storage: a listing there does not wait for a certificate still being renamed,
    so an index of a newer status can miss a certificate whose publisher was killed before indexing;
    the rerun must then write it. Under many publishers this coalesces index rebuilds instead of
    making each one list everything.

    Called after the registry lock is released: the listing runs beside other publishers' commits.
    Locally a separate lock serialises index writers (so an older listing never replaces a newer).
    """
    import fcntl

    def covered() -> bool:
        data, _ = read_tagged(registry / INDEX_JSON)
        if not data:
            return False
        try:
            document = json.loads(data)
            version = int((document.get("trust") or {}).get("status_version") or 0)
            listed = {row.get("certificate_id") for row in document.get("certificates") or []}
        except (ValueError, TypeError, AttributeError):
            return False
        return version >= committed and certificate_id in listed

    if not is_local(registry):
        if not covered():
            _write_index(registry, None, anchors)
        return
    with open(registry / INDEX_WRITE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not covered():
            _remove_index_temporaries(registry)
            _write_index(registry, None, anchors)


def write_index(registry: Path, at: dt.datetime | None, anchors: list[Any] | None) -> Path:
    """Write the index now (statuses at ``at``), locally under the index-write lock. Never called
    with the registry lock held: the listing may take that lock shared (lock order: index, registry)."""
    import fcntl

    if not is_local(registry):
        return _write_index(registry, at, anchors)
    registry.mkdir(parents=True, exist_ok=True)
    with open(registry / INDEX_WRITE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_index_temporaries(registry)
        return _write_index(registry, at, anchors)


def _remove_index_temporaries(registry: Path) -> None:
    for pattern in _INDEX_TEMPORARIES:
        for stale in registry.glob(pattern):
            stale.unlink(missing_ok=True)


def _backoff(attempt: int) -> None:
    import random
    import time

    time.sleep(random.uniform(0, min(0.02 * 2**attempt, 1.0)))


def update_trust(
    registry: Path,
    key: Any,
    moment: dt.datetime | None = None,
    adopt: bool = False,
    pending: dict[str, tuple[bytes, bytes]] | None = None,
    revocations: list[dict[str, Any]] | None = None,
    proofs: dict[Path, bytes] | None = None,
) -> int:
    """Bring the registry's issuance log and TUF metadata up to date with its certificate files.

    Locally the caller holds :func:`registry_lock`; on S3 the update is a compare-and-swap loop:
    log entries, tree head and ``timestamp.json`` are replaced only if unchanged since they were
    read (If-Match), versioned metadata files are created only if new (If-None-Match); a publisher
    that loses to another one reads the registry again and rebuilds its update on top (no entry of
    either is lost).

    ``pending`` (target path -> certificate bytes, signature): the certificates of one publication,
    not yet written (they appear once listed); only they are examined (an incremental update, cost
    independent of the registry's size). Without it every certificate file is examined (rebuild).
    ``revocations``: revoke entries to append (one per certificate id; a certificate revoked already
    keeps its first). ``proofs``: filled with the ``<id>.log.json`` files to write (path -> bytes)
    instead of writing them (publication renames them into place with the certificate).

    Only certificates signed by ``key`` (valid signature) or already listed with the same bytes are
    listed: a file dropped into the registry is never adopted. Listing is sticky (a listed
    certificate whose file disappears stays listed) and so is revocation: it is taken from the
    previous signed targets and from the log's revoke entries, so deleting or rolling back either
    does not undo it. New certificate bytes get an issuance entry in the log; every examined
    certificate gets ``<id>.log.json`` beside it when it lacks a current one (so a run killed
    between log and proof is completed by the next). ``adopt`` creates metadata for a registry
    that has certificates but none (made before trust metadata existed).
    """
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            if proofs is not None:
                proofs.clear()
            version = _update_trust_once(registry, key, moment, adopt, pending, revocations, proofs)
            break
        except Conflict:
            _backoff(attempt)
    else:
        raise PublishError(
            f"the registry's metadata kept changing under this publication ({COMMIT_ATTEMPTS} attempts lost "
            "to concurrent publishers); nothing of it is listed yet, run it again",
            str(registry),
        )
    from greencert.trust.store import trust_signing_key

    trust_signing_key(key)
    return version


def _update_trust_once(
    registry: Path,
    key: Any,
    moment: dt.datetime | None,
    adopt: bool,
    pending: dict[str, tuple[bytes, bytes]] | None,
    revocations: list[dict[str, Any]] | None,
    proofs: dict[Path, bytes] | None,
) -> int:
    """One round of :func:`update_trust`; returns the version of the timestamp it wrote or found."""
    import hashlib

    from greencert.certificate.build import stamp
    from greencert.certificate.sign import signature_valid
    from greencert.trust import log as issuance_log
    from greencert.trust.metadata import CUSTOM_KEY, check_writable, target_file, write_metadata

    moment = (moment or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    if pending is None:
        files = certificate_files(registry)
        has_certificates = bool(files)
    else:
        files = []
        has_certificates = bool(pending)  # publication checked the metadata before (ensure_trust_metadata)
    state = check_writable(registry, key, has_certificates=has_certificates and not adopt)
    previous = state.target_files() if state is not None else {}
    authorised = list(issuer_publics(state).values()) if state is not None else []
    log_state = issuance_log.read_log(registry, key.public, authorised)
    logged = issuance_log.entries_by_certificate(log_state.leaves)
    statuses = {rel: dict((t.custom or {}).get(CUSTOM_KEY) or {}) for rel, t in previous.items()}
    changed: dict[str, bytes] = {}
    examined: dict[str, tuple[Path, str, str]] = {}  # rel -> (path, sha256, certificate id)
    new_entries: list[dict[str, Any]] = []

    def candidates() -> Any:
        if pending is not None:
            for rel, (raw, signature) in pending.items():
                yield registry / rel, raw, signature
            return
        for path in files:
            try:
                yield path, path.read_bytes(), path.with_name(path.name + ".sig").read_bytes()
            except OSError:
                continue

    for path, raw, signature in candidates():
        cert = _read_certificate(raw)
        if cert is None:
            continue
        rel = path.relative_to(registry).as_posix()
        digest = hashlib.sha256(raw).hexdigest()
        cid = cert["certificate_id"]
        old = previous.get(rel)
        if old is not None and old.hashes.get("sha256") == digest:
            examined[rel] = (path, digest, cid)
            continue
        if (
            rel != target_path(cert)
            or (cert.get("signing") or {}).get("key_id") != key.key_id
            or not signature_valid(key.public, signature, raw)
        ):
            continue  # not this issuer's: shown as unverified, never listed
        if (logged.get(cid, {}).get("issue") or {}).get("sha256") != digest:
            new_entries.append(
                {
                    "type": "issue",
                    "certificate_id": cid,
                    "path": rel,
                    "sha256": digest,
                    "key_id": key.key_id,
                    "logged_at": stamp(moment),
                }
            )
        changed[rel] = raw
        examined[rel] = (path, digest, cid)
        statuses[rel] = {
            **statuses.get(rel, {}),
            "certificate_id": cid,
            "status": statuses.get(rel, {}).get("status", "issued"),
        }
    for entry in revocations or []:
        if "revoke" not in logged.get(entry["certificate_id"], {}) and entry not in new_entries:
            new_entries.append(entry)
    head, tree = issuance_log.append(
        registry,
        key,
        new_entries,
        moment,
        authorised,
        state=log_state,
        # A rebuild signs a fresh head; an incremental update only when it appended something.
        resign=pending is None,
    )
    logged = issuance_log.entries_by_certificate([*log_state.leaves, *_leaves(new_entries)])
    for rel, (path, digest, cid) in examined.items():
        issue = logged.get(cid, {}).get("issue")
        if issue is None or issue["sha256"] != digest:
            continue  # listed before this log existed (adopted registry): no proof to give
        statuses[rel]["log_index"] = issue["leaf_index"]
        stem = path.with_suffix("")
        proof_path = stem.with_name(stem.name + ".log.json")
        try:
            current = json.loads(proof_path.read_bytes()).get("leaf_index") == issue["leaf_index"]
        except (OSError, ValueError, AttributeError):
            current = False
        if not current:
            record = issuance_log.inclusion_record(tree, head, issue["leaf_index"], issue)
            if proofs is not None:
                proofs[proof_path] = json.dumps(record, sort_keys=True).encode()
            else:
                write_file(proof_path, json.dumps(record, sort_keys=True).encode())
    for status in statuses.values():  # listed or not (a revoked certificate's file may be gone)
        revoke_entry = logged.get(str(status.get("certificate_id")), {}).get("revoke")
        if revoke_entry is not None:
            status.update(
                status="revoked", revoked_at=revoke_entry["revoked_at"], reason=revoke_entry["reason"]
            )
    if state is not None and not changed and not new_entries and pending is not None:
        unchanged = all(
            statuses[rel] == dict((previous[rel].custom or {}).get(CUSTOM_KEY) or {}) for rel in previous
        )
        if unchanged:
            return int(state.timestamp.signed.version) if state.timestamp is not None else 0  # signed already
    final = {}
    for rel, status in statuses.items():
        if rel in changed:
            final[rel] = target_file(rel, changed[rel], status)
        else:
            final[rel] = target_file(rel, None, status, like=previous[rel])
    written = write_metadata(registry, key, final, moment, state)
    assert written.timestamp is not None  # write_metadata always signs a new timestamp
    return int(written.timestamp.signed.version)


def _leaves(entries: list[dict[str, Any]]) -> list[bytes]:
    from greencert.certificate.build import canonical_bytes

    return [canonical_bytes(e) for e in entries]


def issuer_publics(state: Any) -> dict[str, Any]:
    """GreenCert key id -> public key of every key the registry's current root lets sign targets."""
    from greencert.certificate.sign import key_id
    from greencert.trust.metadata import public_of

    root = state.root.signed
    return {key_id(p): p for p in (public_of(root.get_key(k)) for k in root.roles["targets"].keyids)}


def ensure_trust_metadata(registry: Path, key: Any) -> None:
    """Check the registry's metadata before a publication; create it (root v1) for a new, empty registry.

    A registry that has certificates but no metadata is refused (see :func:`update_trust`): the
    metadata must exist before the first certificate, so that its later absence means deletion.
    """
    from greencert.trust.metadata import check_writable

    registry = registry_root(registry)
    with registry_lock(registry):
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                # Listing the certificates (a LIST of the whole registry on S3) only if there is no metadata.
                if check_writable(registry, key, has_certificates=False) is None and (
                    check_writable(registry, key, has_certificates=bool(certificate_files(registry))) is None
                ):
                    update_trust(registry, key)
                return
            except Conflict:
                _backoff(attempt)
        raise PublishError("the registry's metadata stays incomplete (timestamp.json missing)", str(registry))


def _issuer_anchor(key: Any) -> list[Any]:
    from greencert.trust.store import TrustAnchor

    return [TrustAnchor(key.key_id, key.public, "issuer", "the signing key", key.development)]


def revoke(
    registry: Path,
    certificate_id: str,
    reason: str,
    signing_key: str | Path | None = None,
    at: dt.datetime | None = None,
) -> Path:
    """Revoke ``certificate_id``: a revoke entry in the issuance log, then signed metadata and index.

    Revoking twice keeps the first entry (its time and reason stand). The revocation is part of the
    registry's TUF targets metadata, which every reader checks (``greencert verify`` fails with
    ``revoked``); it cannot be undone by deleting or rolling back a file (docs/trust.md).
    """
    from greencert.bundle.manifest import check_label
    from greencert.certificate.build import stamp
    from greencert.certificate.sign import load_signing_key
    from greencert.trust import log as issuance_log

    root = registry_root(registry)
    try:
        reason = check_label(reason.strip(), "revocation reason")
    except ValueError as exc:
        raise ConfigError(str(exc), "--reason") from None
    if not reason:
        raise ConfigError("a revocation needs a reason", "--reason")
    key = load_signing_key(signing_key)
    with registry_lock(root):
        remove_shared_temporaries(root)
        logged = issuance_log.latest_entries(root)
        if "issue" not in logged.get(certificate_id, {}):
            raise ConfigError(f"no certificate {certificate_id!r} was issued in this registry", str(root))
        moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        issue = logged[certificate_id]["issue"]
        entry = {
            "type": "revoke",
            "certificate_id": certificate_id,
            "path": issue["path"],
            "sha256": issue["sha256"],
            "key_id": key.key_id,
            "reason": reason,
            "revoked_at": stamp(moment),
            "logged_at": stamp(moment),
        }
        # One update: the revoke entry (unless the log has one already: the first stands) and the
        # next signed metadata, retried as a whole on an object store if another publisher commits.
        update_trust(root, key, revocations=[entry])
    write_index(root, None, _issuer_anchor(key))
    return root / "metadata"

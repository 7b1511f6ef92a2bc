"""Issue a certificate into the registry: sign, label, reports, evidence, log, metadata, index.

Every file of the certificate is first written to a hidden temporary beside its target (a full
disk fails there, with the registry unchanged; object stores get whole-object PUTs later), under
a per-certificate lock (two publishers of one id never interleave). Then, under the registry lock
(local folders; object stores use conditional writes instead, docs/registry.md):

1. an older, different certificate of the same id is withdrawn (a corrected bundle);
2. evidence copy, validation report, reports, label HTML and PDF, public keys and the signature
   ``<id>.json.sig`` are renamed into place;
3. the issuance-log entry, ``<id>.log.json`` and the signed TUF metadata listing the certificate;
4. the certificate ``<id>.json`` (canonical bytes) -- its presence means "published and listed";
5. ``index.json`` / ``index.html``.

A reader therefore never finds a certificate without its signature, evidence and signed status,
and the index never lists a certificate whose files are not there. The same graded input and key
give byte-identical files (no wall-clock time in any of them; the PDF's dates are pinned to the
issue time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.atomic import swap_directory
from greencert.certificate.registry import (
    ISSUER_PEM,
    KEYS_DIR,
    _issuer_anchor,
    ensure_trust_metadata,
    index_after_commit,
    registry_lock,
    remove_shared_temporaries,
    safe_child,
    update_trust,
)
from greencert.errors import PublishError
from greencert.files import durable_temporary, is_local, registry_root, remove_file, write_file

log = logging.getLogger("greencert")

ENV_PDF = "GREENCERT_LABEL_PDF"  # "1": PDF required, "0": no PDF, unset: PDF when Chromium is available


def _pdf_mode(pdf: bool | None) -> bool | None:
    if pdf is not None:
        return pdf
    value = os.environ.get(ENV_PDF, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    return None


def _stage_evidence(
    bundle_dir: Path, target: Path, inputs: list[dict[str, str]], files: _Publication
) -> Path | None:
    """Copy the bundle's files into a hidden staging folder beside ``target``; None if nothing to swap.

    Object stores get the files as whole-object PUTs at ``files``' commit. A rerun of the same bundle
    stages nothing: the published folder is left alone, so there is no moment at which a published
    certificate's evidence is missing (the swap is two renames).
    """
    if not is_local(target):
        for item in inputs:
            files.write(target / item["file"], (bundle_dir / item["file"]).read_bytes())
        return None
    if _same_evidence(target, inputs):
        return None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for item in inputs:
            shutil.copy2(bundle_dir / item["file"], staging / item["file"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _swap_evidence(staging: Path, target: Path) -> None:
    swap_directory(staging, target)


class _Publication:
    """A certificate's files, written to temporaries first and renamed into place together.

    Every byte is written (and fsynced) before anything visible changes, so a full disk or a
    quota fails while the registry still shows exactly what it showed before; only renames,
    which need no space, remain for :meth:`commit`. Object stores are written at once.
    """

    def __init__(self) -> None:
        self._moves: list[tuple[Path, Path]] = []
        self._remote: list[tuple[Path, bytes]] = []
        self._children: list[_Publication] = []

    def write(self, path: Path, data: bytes) -> None:
        if not is_local(path):
            self._remote.append((path, data))  # PUT at commit, after an old version is withdrawn
            return
        self._moves.append((durable_temporary(path, data), path))

    def stage(self, path: Path, data: bytes) -> _Publication:
        """Write ``path`` like :meth:`write`, but as a publication of its own, committed separately
        (the certificate, which appears last). Object stores get it at :meth:`commit`."""
        staged = _Publication()
        if is_local(path):
            staged.write(path, data)
        else:
            staged._remote.append((path, data))
        self._children.append(staged)
        return staged

    def discard(self) -> None:
        for child in self._children:
            child.discard()
        for tmp, _ in self._moves:
            tmp.unlink(missing_ok=True)
        self._moves.clear()

    def commit(self) -> None:
        """Rename every temporary into place, in the order written."""
        for path, data in self._remote:
            write_file(path, data)
        self._remote.clear()
        for tmp, path in self._moves:
            os.replace(tmp, path)
        for folder in {path.parent for _, path in self._moves}:
            dir_fd = os.open(folder, os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self._moves.clear()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Registry-wide files (public keys) are the same for every certificate of a key: a batch of
    50 rewrote them 50 times, each an atomic, fsynced write. Only write what differs."""
    if is_local(path):
        try:
            if path.read_bytes() == data:
                return
        except OSError:
            pass
    write_file(path, data)


def _same_evidence(target: Path, inputs: list[dict[str, str]]) -> bool:
    from greencert.bundle.reader import sha256_file

    if not target.is_dir() or {p.name for p in target.iterdir()} != {i["file"] for i in inputs}:
        return False
    return all(sha256_file(target / i["file"]) == i["sha256"] for i in inputs)


@contextlib.contextmanager
def _certificate_lock(folder: Path, cert_id: str) -> Generator[None, None, None]:
    """Serialise publishers of one certificate id (two runs of the same period, a retry next to a
    stuck attempt): without it their files could interleave (one run's signature, the other's JSON)."""
    if not is_local(folder):
        yield
        return
    import fcntl

    with open(folder / f".{cert_id}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_stale_temporaries(folder: Path, cert_id: str) -> None:
    """Under the certificate's lock, temporaries of its files can only be left by a killed run."""
    if not is_local(folder):
        return
    prefix = f".{cert_id}."
    candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and p.name != f"{prefix}lock"]
    # ... and inside its folders (reports, data docs, evidence), at any depth.
    for sub in folder.glob(f"{cert_id}.*"):
        if sub.is_dir() and not sub.is_symlink():
            candidates += [p for p in sub.rglob(".*.tmp") if p.is_file()]
    for path in candidates:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _registry_file(exc: OSError, default: Path) -> str:
    """The registry path an OSError is about (a failed copy names its source first, then the target)."""
    for name in (exc.filename2, exc.filename):
        if name is not None and str(name).startswith(str(default.parent)):
            return str(name)
    return str(default)


@dataclass(frozen=True)
class PreparedCertificate:
    """A certificate's documents, built but neither signed nor written (see :func:`prepare_certificate`)."""

    graded_digest: str  # of the graded input it was built from: publication checks it
    cert: dict[str, Any]
    body: bytes  # canonical bytes, to be signed at publication
    label: str
    pdf: bytes | None
    reports: dict[str, bytes]


def _graded_digest(graded: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(graded, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def prepare_certificate(
    graded: dict[str, Any], signing_key: Any = None, pdf: bool | None = None
) -> PreparedCertificate:
    """Build the certificate, its canonical bytes, label and reports: CPU only, no file, no signature.

    A fleet run prepares while Great Expectations still validates (the documents do not depend
    on the validation report, only on the figures); nothing is signed or written before the
    bundle has passed, and :func:`publish_certificate` refuses a preparation of other figures.
    """
    from greencert.certificate.build import build_certificate, canonical_bytes
    from greencert.certificate.label import LabelError, render_label, render_pdf
    from greencert.certificate.reports import build_reports
    from greencert.certificate.sign import load_signing_key

    key = load_signing_key(signing_key)
    cert = build_certificate(graded, key.signing_section())
    label = render_label(cert)
    pdf_bytes: bytes | None = None
    mode = _pdf_mode(pdf)
    if mode is not False:
        issued = dt.datetime.fromisoformat(cert["issued_at"].replace("Z", "+00:00"))
        try:
            pdf_bytes = render_pdf(label, issued)
        except LabelError as exc:
            if mode:
                raise
            log.warning("no PDF label for %s: %s", cert["certificate_id"], exc)
    return PreparedCertificate(
        _graded_digest(graded), cert, canonical_bytes(cert), label, pdf_bytes, build_reports(cert)
    )


def publish_certificate(
    graded: dict[str, Any],
    bundle_dir: str | Path,
    validation_report: bytes,
    registry: str | Path,
    signing_key: Any = None,
    pdf: bool | None = None,
    *,
    index: bool = True,
    prepared: PreparedCertificate | None = None,
    data_docs: Path | None = None,
) -> str:
    """Build, sign and publish the certificate of ``graded``; return the certificate file's path/URL.

    ``index=False`` leaves the registry index to the caller: a batch (a fleet-day's 50
    certificates) rebuilds it once at the end instead of once per certificate.
    ``prepared`` (from :func:`prepare_certificate` with the same graded input and key) skips
    building the documents again. ``data_docs``: the Great Expectations Data Docs site of the
    validation run, published as ``<certificate_id>.datadocs/`` (the label links to it).
    """
    from greencert.certificate.sign import load_signing_key

    key = load_signing_key(signing_key)
    if prepared is None:
        prepared = prepare_certificate(graded, key, pdf)
    elif (
        prepared.graded_digest != _graded_digest(graded) or prepared.cert["signing"] != key.signing_section()
    ):
        raise PublishError("prepared certificate does not match the graded input or key", str(bundle_dir))
    cert, body, label, pdf_bytes = prepared.cert, prepared.body, prepared.label, prepared.pdf
    signature = key.sign(body)
    cert_id = cert["certificate_id"]

    root = registry_root(registry)
    root.mkdir(parents=True, exist_ok=True)
    folder = safe_child(root, cert["scope"]["site"], cert["scope"]["deployment"])
    folder.mkdir(parents=True, exist_ok=True)
    # The id is built from the two checked names and timestamps; check the file names too.
    safe_child(root, cert["scope"]["site"], cert["scope"]["deployment"], f"{cert_id}.json")

    cert_path = folder / f"{cert_id}.json"
    cert_rel = cert_path.relative_to(root).as_posix()
    # Before anything is written: refuse a registry whose trust metadata is damaged or owned by
    # another issuer key (the certificate would be published but could never be listed).
    ensure_trust_metadata(root, key)
    committed = False
    try:
        with _certificate_lock(folder, cert_id):
            _remove_stale_temporaries(folder, cert_id)
            evidence = folder / f"{cert_id}.evidence"
            files = _Publication()
            staging = None
            try:
                staging = _stage_evidence(Path(bundle_dir), evidence, graded["inputs"], files)
                files.write(folder / f"{cert_id}.validation.json", validation_report)
                if data_docs is not None:
                    for page in sorted(p for p in Path(data_docs).rglob("*") if p.is_file()):
                        rel = page.relative_to(data_docs).as_posix()
                        files.write(folder / f"{cert_id}.datadocs" / rel, page.read_bytes())
                for name, data in prepared.reports.items():
                    files.write(folder / f"{cert_id}.reports" / name, data)
                files.write(folder / f"{cert_id}.html", label.encode("utf-8"))
                if pdf_bytes is not None:
                    files.write(folder / f"{cert_id}.pdf", pdf_bytes)
                files.write(folder / f"{cert_id}.issuer.pem", key.public_pem)
                files.write(folder / f"{cert_id}.json.sig", signature)
                # Last of the certificate's files, and only once the signed metadata lists it:
                # its presence means "published and listed".
                certificate = files.stage(cert_path, body)
            except BaseException:
                files.discard()
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            with registry_lock(root):
                remove_shared_temporaries(root)
                # 1. The issuance-log entry and the signed metadata listing the new bytes (incremental:
                # this certificate only). Its commit point is timestamp.json: a full disk or a lost
                # race before it leaves the registry's signed state as it was.
                proofs: dict[Path, bytes] = {}
                version = update_trust(root, key, pending={cert_rel: (body, signature)}, proofs=proofs)
                committed = True
                # 2. Only renames from here (no space needed): the inclusion proof, an older different
                # certificate of this id withdrawn (a corrected bundle: so that no reader ever pairs
                # it with the new signature and evidence; readers that find a listed certificate
                # missing read again, see list_certificates), the evidence and companions, the
                # registry-wide keys, and last the certificate itself: "published and listed".
                for path, data in proofs.items():
                    files.write(path, data)
                if _published_bytes(cert_path) not in (None, body):
                    remove_file(cert_path)
                if staging is not None:
                    _swap_evidence(staging, evidence)
                files.commit()
                _write_if_changed(root / KEYS_DIR / f"{key.key_id}.pem", key.public_pem)
                _write_if_changed(root / ISSUER_PEM, key.public_pem)
                certificate.commit()
            if index:
                # 3. The index, outside the registry lock (skipped if a newer one covers this commit).
                index_after_commit(root, _issuer_anchor(key), version, cert_id)
    except OSError as exc:
        if committed:
            raise PublishError(
                f"certificate {cert_id} is listed in the registry's signed metadata, but its files or the "
                f"index could not all be written ({exc.strerror or exc}); run the publication again "
                "once there is room",
                _registry_file(exc, folder),
            ) from None
        # Disk full, quota, permissions: nothing visible changed (see _Publication).
        raise PublishError(
            f"cannot write to the registry ({exc.strerror or exc}); nothing was changed, "
            "earlier certificates are intact",
            _registry_file(exc, folder),
        ) from None

    log.info(
        "published %s: grade %s, signed by key %s%s -> %s",
        cert_id,
        cert["grade"],
        key.key_id,
        " (development key)" if key.development else "",
        cert_path,
    )
    return PublishedPath(str(cert_path), cert)


class PublishedPath(str):
    """The published certificate's path or URL, carrying the certificate it published: callers that
    print it never read it back through a path another publisher may be replacing."""

    certificate: dict[str, Any]

    def __new__(cls, path: str, certificate: dict[str, Any]) -> PublishedPath:
        obj = super().__new__(cls, path)
        obj.certificate = certificate
        return obj

    def __getnewargs__(self) -> tuple[str, dict[str, Any]]:  # type: ignore[override]  # str's takes no certificate
        # Pickling (a fleet run's helper process sends its published paths back) calls __new__ with these.
        return str(self), self.certificate


def _published_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None

"""Issue a certificate into the registry: sign, label, reports, evidence, then the index.

Write order (each file atomic; see ``registry.write_file``):

1. evidence copy, validation report, reports, label HTML and PDF, public keys;
2. the signature ``<id>.json.sig``;
3. the certificate ``<id>.json`` (canonical bytes) -- its presence means "published";
4. ``index.json`` / ``index.html`` regenerated from the certificate files.

A reader therefore never finds a certificate without its signature and
evidence, and the index never lists a certificate whose files are not there.
The same graded input and key give byte-identical files (no wall-clock time
in any of them; the PDF's dates are pinned to the issue time).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from greencert.certificate.registry import (
    ISSUER_PEM,
    KEYS_DIR,
    REVOCATIONS,
    is_local,
    rebuild_index,
    registry_root,
    safe_child,
    write_file,
    write_revocations,
)

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


def _copy_evidence(bundle_dir: Path, target: Path, inputs: list[dict[str, str]]) -> None:
    """Copy the bundle's files next to the certificate (temp folder + rename locally)."""
    if not is_local(target):
        for item in inputs:
            write_file(target / item["file"], (bundle_dir / item["file"]).read_bytes())
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for item in inputs:
            shutil.copy2(bundle_dir / item["file"], staging / item["file"])
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def publish_certificate(
    graded: dict[str, Any],
    bundle_dir: str | Path,
    validation_report: bytes,
    registry: str | Path,
    signing_key: str | Path | None = None,
    pdf: bool | None = None,
) -> str:
    """Build, sign and publish the certificate of ``graded``; return the certificate file's path/URL."""
    from greencert.certificate.build import build_certificate, canonical_bytes
    from greencert.certificate.label import LabelError, render_label, render_pdf
    from greencert.certificate.reports import build_reports
    from greencert.certificate.sign import load_signing_key

    key = load_signing_key(signing_key)
    cert = build_certificate(graded, key.signing_section())
    body = canonical_bytes(cert)
    signature = key.sign(body)
    cert_id = cert["certificate_id"]

    root = registry_root(registry)
    root.mkdir(parents=True, exist_ok=True)
    folder = safe_child(root, cert["scope"]["site"], cert["scope"]["deployment"])
    folder.mkdir(parents=True, exist_ok=True)
    # The id is built from the two checked names and timestamps; check the file names too.
    safe_child(root, cert["scope"]["site"], cert["scope"]["deployment"], f"{cert_id}.json")

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
            log.warning("no PDF label for %s: %s", cert_id, exc)

    _copy_evidence(Path(bundle_dir), folder / f"{cert_id}.evidence", graded["inputs"])
    write_file(folder / f"{cert_id}.validation.json", validation_report)
    for name, data in build_reports(cert).items():
        write_file(folder / f"{cert_id}.reports" / name, data)
    write_file(folder / f"{cert_id}.html", label.encode("utf-8"))
    if pdf_bytes is not None:
        write_file(folder / f"{cert_id}.pdf", pdf_bytes)
    write_file(folder / f"{cert_id}.issuer.pem", key.public_pem)
    write_file(root / KEYS_DIR / f"{key.key_id}.pem", key.public_pem)
    write_file(root / ISSUER_PEM, key.public_pem)
    if not (root / REVOCATIONS).exists():
        # An empty signed list from the first publication on: a verifier that finds the
        # registry but no list knows something was removed.
        write_revocations(root, {}, key)
    write_file(folder / f"{cert_id}.json.sig", signature)
    cert_path = folder / f"{cert_id}.json"
    write_file(cert_path, body)  # last of the certificate's files: its presence means "published"
    rebuild_index(root)
    log.info(
        "published %s: grade %s, signed by key %s%s -> %s",
        cert_id,
        cert["grade"],
        key.key_id,
        " (development key)" if key.development else "",
        cert_path,
    )
    return str(cert_path)

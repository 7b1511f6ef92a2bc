"""``greencert verify``: check a published certificate against its evidence.

Checks, in order, each with its own reason code and exit status so scripts can
tell them apart: the Ed25519 signature over the file's exact bytes (by the
expected key: ``wrong-key``; not matching: ``bad-signature``); the file is in
RFC 8785 canonical form; the certificate has not expired (``--at`` to check at
another time); it is not on the issuer's signed revocation list; the evidence
files hash to the recorded sha256; and every figure recomputed from the
evidence (validation, computation, grading) equals the certificate's.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError, VerificationFailed

EXIT_CODES = {
    "unreadable": 10,
    "not-canonical": 11,
    "bad-signature": 12,
    "wrong-key": 13,
    "expired": 14,
    "revoked": 15,
    "bundle-missing": 16,
    "input-hash-mismatch": 17,
    "figure-mismatch": 18,
    "evidence-invalid": 19,
}


def fail(reason: str, problem: str, where: str | None = None) -> VerificationFailed:
    return VerificationFailed(reason, problem, where, EXIT_CODES[reason])


@dataclass
class VerifyResult:
    certificate_id: str
    lines: list[str] = field(default_factory=list)


def read_certificate(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        raw = path.read_bytes()
        cert = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise fail("unreadable", f"cannot read certificate ({exc})", str(path)) from None
    if not isinstance(cert, dict) or "certificate_id" not in cert:
        raise fail("unreadable", "not a GreenCert certificate", str(path))
    return cert, raw


def check_canonical(cert: dict[str, Any], raw: bytes, path: Path) -> None:
    from greencert.certificate.build import canonical_bytes

    if canonical_bytes(cert) != raw:
        raise fail(
            "not-canonical", "file is not in RFC 8785 canonical form (edited after publication?)", str(path)
        )


def load_certificate(path: Path) -> tuple[dict[str, Any], bytes]:
    cert, raw = read_certificate(path)
    check_canonical(cert, raw, path)
    return cert, raw


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def _public_key_candidates(path: Path, cert: dict[str, Any], registry: Path | None) -> list[tuple[Path, str]]:
    """Where the issuer key may be, in order: beside the certificate, then the registry."""
    from greencert.certificate.registry import ISSUER_PEM, KEYS_DIR

    stem = path.name.removesuffix(".json")
    out = [(path.with_name(f"{stem}.issuer.pem"), "published beside the certificate")]
    if registry is not None:
        key_id = (cert.get("signing") or {}).get("key_id")
        if isinstance(key_id, str) and key_id.isalnum():
            out.append((registry / KEYS_DIR / f"{key_id}.pem", "registry key archive"))
        out.append((registry / ISSUER_PEM, "registry issuer key"))
    return out


def check_signature(
    path: Path, raw: bytes, cert: dict[str, Any], public_key: Path | None, registry: Path | None
) -> tuple[Any, str]:
    """Verify ``<path>.sig`` over ``raw``; return (public key, description of where the key came from)."""
    from greencert.certificate.sign import key_id, load_public_key, signature_valid
    from greencert.errors import ConfigError

    signing = cert.get("signing")
    if not isinstance(signing, dict) or "key_id" not in signing:
        raise fail("bad-signature", "certificate is unsigned (no signing section)", str(path))
    sig_path = path.with_name(path.name + ".sig")
    try:
        signature = sig_path.read_bytes()
    except OSError:
        raise fail("bad-signature", "signature file is missing", str(sig_path)) from None
    if public_key is not None:
        candidates = [(public_key, "pinned with --key")]
    else:
        candidates = [(p, why) for p, why in _public_key_candidates(path, cert, registry) if p.is_file()]
        if not candidates:
            raise fail("bad-signature", "no issuer public key found (pass --key ISSUER.pem)", str(path))
    key_path, origin = candidates[0]
    try:
        public = load_public_key(key_path)
    except ConfigError as exc:
        raise fail("unreadable", exc.problem, str(key_path)) from None
    if key_id(public) != signing["key_id"]:
        raise fail(
            "wrong-key",
            f"certificate names signing key {signing['key_id']}, but the key given is {key_id(public)}",
            str(key_path),
        )
    if len(signature) != 64 or not signature_valid(public, signature, raw):
        raise fail(
            "bad-signature",
            "Ed25519 signature does not match the file's bytes (certificate or signature altered)",
            str(path),
        )
    return public, f"{key_path} ({origin})"


def check_expiry(cert: dict[str, Any], at: dt.datetime, path: Path) -> None:
    valid_until = _utc(cert["valid_until"])
    if at >= valid_until:
        raise fail(
            "expired",
            f"certificate expired at {cert['valid_until']} (checked at {at.strftime('%Y-%m-%dT%H:%M:%SZ')})",
            str(path),
        )


def check_revocation(cert: dict[str, Any], public: Any, registry: Path | None, path: Path) -> str:
    """Fail if the issuer's signed revocation list names the certificate; return a status line."""
    from greencert.certificate.registry import REVOCATIONS
    from greencert.certificate.sign import key_id, signature_valid

    if registry is None:
        return "revocation list: no registry found (pass --registry to check its list)"
    if not (registry / REVOCATIONS).is_file():
        return f"WARNING: revocation list: the registry {registry} has none (every publication writes one)"
    list_path = registry / REVOCATIONS
    try:
        body = list_path.read_bytes()
        signature = list_path.with_name(REVOCATIONS + ".sig").read_bytes()
        document = json.loads(body)
        entries = {e["certificate_id"]: e for e in document["revoked"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(
            "unreadable", f"revocation list or its signature is unreadable ({exc!r})", str(list_path)
        ) from None
    # Only the certificate's issuer may revoke it: the list must verify with the same key.
    if (document.get("signing") or {}).get("key_id") != key_id(public) or not signature_valid(
        public, signature, body
    ):
        raise fail(
            "bad-signature", "revocation list is not signed by the certificate's issuer", str(list_path)
        )
    entry = entries.get(cert["certificate_id"])
    if entry is not None:
        raise fail(
            "revoked",
            f"certificate was revoked at {entry.get('revoked_at')}: {entry.get('reason')}",
            str(list_path),
        )
    return f"revocation list: not revoked ({len(entries)} revoked certificate(s) listed)"


def _diff(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            out += _diff(expected.get(key), actual.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if expected != actual:
        return [
            f"{prefix}: certificate says {json.dumps(actual)[:120]}, evidence gives {json.dumps(expected)[:120]}"
        ]
    return []


def recompute(bundle_dir: Path, scheme_id: str, scheme_version: str) -> dict[str, Any]:
    """Re-run the certification stages on ``bundle_dir`` and return the certificate they build."""
    from greencert.certificate.build import build_certificate
    from greencert.grading import scheme_by_version
    from greencert.pipeline import compute_stage, grade_stage, validate_stage

    scheme = scheme_by_version(scheme_id, scheme_version)
    with tempfile.TemporaryDirectory(prefix="greencert-verify-") as tmp:
        validation = validate_stage(bundle_dir, tmp, scheme.path)
        figures = compute_stage(bundle_dir, validation, tmp, scheme.path)
        graded = grade_stage(figures, tmp, scheme.path)
        return build_certificate(json.loads(Path(graded).read_text()))


def _default_registry(path: Path) -> Path | None:
    """``<registry>/<site>/<deployment>/<id>.json``: the registry is three levels up, if it looks like one."""
    from greencert.certificate.registry import INDEX_JSON, ISSUER_PEM, REVOCATIONS

    root = path.resolve().parent.parent.parent
    return root if any((root / n).is_file() for n in (INDEX_JSON, ISSUER_PEM, REVOCATIONS)) else None


def verify_certificate(
    path: Path,
    bundle_dir: Path | None = None,
    public_key: Path | None = None,
    at: dt.datetime | None = None,
    registry: Path | None = None,
) -> VerifyResult:
    """Run every check (module docstring); raise VerificationFailed with the first failing reason."""
    from greencert.bundle.reader import sha256_file

    path = Path(path)
    registry = Path(registry) if registry is not None else _default_registry(path)
    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    cert, raw = read_certificate(path)
    result = VerifyResult(cert["certificate_id"])
    public, origin = check_signature(path, raw, cert, public_key, registry)
    signing = cert["signing"]
    result.lines.append(f"signature: ok (Ed25519, key {signing['key_id']} from {origin})")
    if signing.get("development_key"):
        result.lines.append("WARNING: signed with a development key: not an issued certificate")
    if public_key is None:
        result.lines.append(
            "note: key not pinned; pass --key with the issuer's published key to rule out a swap"
        )
    check_canonical(cert, raw, path)
    result.lines.append("canonical form: ok")
    check_expiry(cert, moment, path)
    result.lines.append(f"expiry: valid until {cert['valid_until']}")
    result.lines.append(check_revocation(cert, public, registry, path))
    bundle = bundle_dir or path.parent / cert["evidence"]["bundle"]
    if not bundle.is_dir():
        raise fail("bundle-missing", "evidence bundle not found (pass --bundle)", str(bundle))
    for item in cert["inputs"]:
        f = bundle / item["file"]
        if not f.is_file():
            raise fail("bundle-missing", f"evidence file {item['file']} is missing", str(bundle))
        if sha256_file(f) != item["sha256"]:
            raise fail(
                "input-hash-mismatch", f"sha256 of {item['file']} differs from the certificate", str(f)
            )
    result.lines.append(f"input hashes: ok ({len(cert['inputs'])} files)")
    try:
        expected = recompute(bundle, cert["scheme"]["id"], cert["scheme"]["version"])
    except GreenCertError as exc:
        raise fail("evidence-invalid", f"evidence no longer certifies: {exc}", str(bundle)) from None
    unsigned = {k: v for k, v in cert.items() if k not in ("signature",)}
    expected_cmp = {k: v for k, v in expected.items() if k in unsigned}
    differences = _diff(expected_cmp, {k: unsigned[k] for k in expected_cmp})
    if differences:
        raise fail(
            "figure-mismatch", f"{len(differences)} difference(s): " + "; ".join(differences[:5]), str(path)
        )
    result.lines.append("recomputed figures: ok (identical)")
    return result

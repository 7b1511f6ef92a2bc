"""``greencert verify``: check a published certificate against its evidence.

Checks, in order, each with its own reason code and exit status so scripts can
tell them apart: the file is a GreenCert certificate in canonical form; the
evidence files hash to the recorded sha256; and every figure recomputed from
the evidence (validation, computation, grading) equals the certificate's.
"""

from __future__ import annotations

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


def load_certificate(path: Path) -> tuple[dict[str, Any], bytes]:
    from greencert.certificate.build import canonical_bytes

    try:
        raw = path.read_bytes()
        cert = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise fail("unreadable", f"cannot read certificate ({exc})", str(path)) from None
    if not isinstance(cert, dict) or "certificate_id" not in cert:
        raise fail("unreadable", "not a GreenCert certificate", str(path))
    if canonical_bytes(cert) != raw:
        raise fail(
            "not-canonical", "file is not in RFC 8785 canonical form (edited after publication?)", str(path)
        )
    return cert, raw


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


def verify_certificate(path: Path, bundle_dir: Path | None = None) -> VerifyResult:
    from greencert.bundle.reader import sha256_file

    cert, _raw = load_certificate(path)
    result = VerifyResult(cert["certificate_id"])
    result.lines.append("canonical form: ok")
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

"""``greencert verify``: check a published certificate against trust anchors, status, log and evidence.

Checks, in order, each with its own reason code and exit status (``EXIT_CODES``, docs/trust.md):
the issuer is trusted (pinned with ``--key`` or in the trust store; a development key only with
``--allow-development-key``), the registry's signed status is fresh and verifies (python-tuf's
client), the Ed25519 signature covers the file's exact bytes, the file is RFC 8785 canonical, the
scheme is recent enough, the certificate has not expired, the signed status lists exactly these
bytes and does not revoke them, the issuance-log inclusion proof verifies, the evidence files hash
to the recorded sha256, and every figure recomputed from the evidence equals the certificate's.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError, VerificationFailed
from greencert.times import stamp, to_utc

EXIT_CODES = {
    "unreadable": 10,
    "not-canonical": 11,
    "bad-signature": 12,
    "expired": 14,
    "revoked": 15,
    "bundle-missing": 16,
    "input-hash-mismatch": 17,
    "figure-mismatch": 18,
    "evidence-invalid": 19,
    "untrusted-issuer": 20,
    "development-key": 21,
    "status-unknown": 22,
    "not-listed": 23,
    "metadata-mismatch": 24,
    "rollback": 25,
    "bad-metadata": 26,
    "log-inclusion": 27,
    "scheme-too-old": 28,
    "day-certificate-missing": 29,
    "day-certificate-invalid": 30,
    "day-mismatch": 31,
}


def fail(reason: str, problem: str, where: str | None = None) -> VerificationFailed:
    return VerificationFailed(reason, problem, where, EXIT_CODES[reason])


@dataclass
class VerifyResult:
    certificate_id: str
    lines: list[str] = field(default_factory=list)
    development_key: bool = False  # signed with a development key (accepted with allow_development_key)


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


def check_expiry(cert: dict[str, Any], at: dt.datetime, path: Path) -> None:
    valid_until = to_utc(cert["valid_until"])
    if at >= valid_until:
        raise fail(
            "expired",
            f"certificate expired at {cert['valid_until']} (checked at {stamp(at)})",
            str(path),
        )


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
    """Re-run the certification stages on ``bundle_dir`` and return the certificate they build.

    The evidence of a period certificate (a month) is its day partials: the period's figures are
    combined again from them (``pipeline.period_stage``, the stage that issued them).
    """
    from greencert.certificate.build import build_certificate
    from greencert.grading import scheme_by_version
    from greencert.pipeline import compute_stage, grade_stage, period_stage, validate_stage

    scheme = scheme_by_version(scheme_id, scheme_version)
    with tempfile.TemporaryDirectory(prefix="greencert-verify-") as tmp:
        if is_period_evidence(bundle_dir):
            _validation, figures = period_stage(sorted(bundle_dir.glob("*.json")), tmp, scheme.path)
        else:
            validation = validate_stage(bundle_dir, tmp, scheme.path)
            figures = compute_stage(bundle_dir, validation, tmp, scheme.path)
        graded = grade_stage(figures, tmp, scheme.path)
        return build_certificate(json.loads(Path(graded).read_text()))


def is_period_evidence(folder: Path) -> bool:
    """A folder of day partials (a period certificate's evidence), not a bundle."""
    from greencert.bundle.manifest import MANIFEST_NAME

    return not (folder / MANIFEST_NAME).exists() and any(folder.glob("*.json"))


def check_days(
    cert: dict[str, Any],
    path: Path,
    evidence: Path,
    registry: str | Path | None,
    options: TrustOptions,
) -> list[str]:
    """A period certificate stands on its days: each day's partial must be the figures of that day's
    certificate, and that certificate must itself verify (signature, status, recomputation from its
    own bundle). A forged or edited partial, or one of a revoked day, fails here (docs/trust.md)."""
    from greencert.certificate.build import certificate_id
    from greencert.compute.partials import DayPartial
    from greencert.errors import BundleError
    from greencert.times import to_utc

    issued = to_utc(cert["issued_at"])
    lines = []
    for item in cert["inputs"]:
        part_path = evidence / item["file"]
        try:
            partial = DayPartial.from_json(part_path.read_bytes(), str(part_path))
        except BundleError as exc:
            raise fail("evidence-invalid", exc.problem, exc.where) from None
        scope = partial.scope
        day_id = certificate_id(
            scope["site"], scope["deployment"], to_utc(partial.start), to_utc(partial.end)
        )
        day_path = path.parent / f"{day_id}.json"
        if not day_path.is_file():
            raise fail(
                "day-certificate-missing",
                f"no certificate {day_id} for the day of {item['file']}",
                str(day_path),
            )
        try:
            # At the period certificate's issue: a day may have expired since, never been revoked.
            verify_certificate(day_path, None, None, issued, registry, options)
        except VerificationFailed as exc:
            raise fail(
                "day-certificate-invalid", f"day {day_id}: {exc.reason}: {exc.problem}", str(day_path)
            ) from None
        day = json.loads(day_path.read_bytes())
        for key in ("metrics", "hourly", "inputs"):
            if partial.figures.get(key) != day.get(key):
                raise fail(
                    "day-mismatch",
                    f"partial {item['file']} differs from the signed day certificate {day_id} in {key!r}",
                    str(part_path),
                )
        hourly = partial.figures["hourly"]
        if [float(f"{v:.9g}") for v in partial.facility_energy_kwh] != hourly["facility_energy_kwh"] or [
            float(f"{v:.12g}") for v in partial.output_tokens
        ] != hourly["output_tokens"]:
            raise fail(
                "day-mismatch",
                f"partial {item['file']}: its hourly sums are not those of its own figures",
                str(part_path),
            )
        lines.append(day_id)
    return lines


def _default_registry(path: Path) -> Path | None:
    """``<registry>/<site>/<deployment>/<id>.json``: the registry is three levels up, if it has metadata."""
    from greencert.trust.metadata import METADATA_DIR

    root = path.resolve().parent.parent.parent
    return root if (root / METADATA_DIR).is_dir() else None


REQUIRED = ("certificate_id", "signing", "valid_until", "scope", "period", "scheme", "inputs", "evidence")


def check_fields(cert: dict[str, Any], path: Path) -> None:
    """A signed document can still be malformed (an issuer's bug, or a re-signed forgery): say what is missing."""
    missing = [k for k in REQUIRED if k not in cert]
    if missing:
        raise fail("unreadable", f"certificate lacks {', '.join(missing)}", str(path))
    try:
        to_utc(cert["valid_until"])
        for k in ("site", "deployment"):
            if not isinstance(cert["scope"][k], str):
                raise TypeError(k)
        str(cert["scheme"]["id"]), str(cert["scheme"]["version"])
        [(str(i["file"]), str(i["sha256"])) for i in cert["inputs"]]
        str(cert["evidence"]["bundle"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise fail("unreadable", f"certificate field is malformed ({exc!r})", str(path)) from None


@dataclass
class TrustOptions:
    """What the verifier trusts; nothing here comes from the certificate or the registry."""

    keys: list[Path] = field(default_factory=list)  # pinned issuer keys (--key): only these, if any
    trust_store: Path | None = None  # default: $GREENCERT_TRUST_STORE or $GREENCERT_HOME/trust.json
    allow_development_key: bool = False
    offline: bool = False  # accept an unknown revocation status (the output says so)
    min_scheme: str | None = None


def _issuer(cert: dict[str, Any], anchors: list[Any], view: Any, path: Path) -> tuple[Any, str, bool]:
    """The public key to check the certificate with, a description, and whether it is a development key."""
    kid = cert["signing"].get("key_id")
    anchor = next((a for a in anchors if a.key_id == kid), None)
    if view is not None:
        public = view.issuer_keys.get(kid)
        if public is None:
            known = ", ".join(sorted(view.issuer_keys))
            raise fail(
                "untrusted-issuer",
                f"certificate is signed by key {kid}, which the registry's trusted root does not authorise "
                f"(issuer keys: {known})",
                str(path),
            )
        how = (
            anchor.describe()
            if anchor is not None
            else f"key {kid}, authorised by root v{view.root_version} reached from {view.anchor.describe()}"
        )
        return public, how, bool(anchor and anchor.development)
    if anchor is None:
        trusted = ", ".join(a.key_id for a in anchors) or "none"
        raise fail(
            "untrusted-issuer",
            f"certificate is signed by key {kid}, which you do not trust (trusted: {trusted}); "
            "pin the issuer's key with --key ISSUER.pem or add it with `greencert trust add`",
            str(path),
        )
    return anchor.public, anchor.describe(), anchor.development


# What a publication in flight can show for a moment in a local registry (the signed status already
# lists the new bytes while the certificate, its signature or evidence are still being renamed in).
_IN_FLIGHT_REASONS = frozenset(
    {
        "unreadable",
        "bad-signature",
        "not-listed",
        "metadata-mismatch",
        "bundle-missing",
        "input-hash-mismatch",
        "log-inclusion",
    }
)


def verify_certificate(
    path: Path,
    bundle_dir: Path | None = None,
    public_key: Path | list[Path] | None = None,
    at: dt.datetime | None = None,
    registry: str | Path | None = None,
    options: TrustOptions | None = None,
) -> VerifyResult:
    """Run every check (docs/trust.md); raise VerificationFailed with the first failing reason.

    A failure that a publication in flight can cause is checked once more with the local registry's
    lock held shared (between two publications): a reader never reports a half-renamed publication,
    and a real fault (tampering, a missing file) fails the second time just as the first.
    """
    from greencert.certificate import registry as registry_module
    from greencert.files import shared_lock

    options = options or TrustOptions()
    if public_key is not None:
        keys = [public_key] if isinstance(public_key, Path | str) else list(public_key)
        options = dataclasses.replace(options, keys=[*options.keys, *keys])
    try:
        return _verify_once(Path(path), bundle_dir, at, registry, options)
    except VerificationFailed as exc:
        if exc.reason not in _IN_FLIGHT_REASONS:
            raise
        root = Path(registry) if isinstance(registry, Path) else _default_registry(Path(path))
        if isinstance(registry, str) and "://" not in registry:
            root = Path(registry)
        if root is None or getattr(registry_module._held, "registry", None) == str(root):
            raise
        with shared_lock(root / registry_module.LOCK) as held:
            if not held:
                raise
            return _verify_once(Path(path), bundle_dir, at, registry, options)


def _verify_once(
    path: Path,
    bundle_dir: Path | None,
    at: dt.datetime | None,
    registry: str | Path | None,
    options: TrustOptions,
) -> VerifyResult:
    """One pass of every check, in order.

    Trust comes only from ``options`` (pinned keys or the trust store): never from a key found
    beside the certificate or in the registry. The registry (a folder, an fsspec URL or an https://
    URL; default: three folders up) supplies the signed status through python-tuf's client.
    """
    import hashlib

    from greencert.bundle.reader import sha256_file
    from greencert.certificate.registry import target_path
    from greencert.errors import ConfigError
    from greencert.trust import log as issuance_log
    from greencert.trust.metadata import StatusError, open_trusted
    from greencert.trust.store import resolve_anchors

    moment = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    cert, raw = read_certificate(path)
    check_fields(cert, path)
    result = VerifyResult(cert["certificate_id"])
    try:
        pinned: list[str | Path] = list(options.keys)
        anchors = resolve_anchors(pinned, options.trust_store, use_store=not pinned)
    except ConfigError as exc:
        raise fail("unreadable", exc.problem, exc.where) from None
    location = registry if registry is not None else _default_registry(path)
    view = None
    if location is None:
        status_problem = (
            "no registry status found beside the certificate (pass --registry PATH-or-URL of the registry "
            "or of a copy of its metadata, or --offline to accept an unknown status)"
        )
        if not options.offline:
            raise fail("status-unknown", status_problem, str(path))
    else:
        try:
            view = open_trusted(location, anchors)
            status_problem = None
        except StatusError as exc:
            if exc.reason not in ("status-unknown",) or not options.offline:
                raise fail(exc.reason, exc.problem, exc.where) from None
            status_problem = exc.problem
    public, how, development = _issuer(cert, anchors, view, path)
    signing = cert["signing"]
    development = development or bool(signing.get("development_key"))
    if development and not options.allow_development_key:
        raise fail(
            "development-key",
            f"signed with a development key ({signing.get('key_id')}): not an issued certificate "
            "(pass --allow-development-key to check it anyway)",
            str(path),
        )
    from greencert.certificate.sign import signature_valid

    sig_path = path.with_name(path.name + ".sig")
    try:
        signature = sig_path.read_bytes()
    except OSError:
        raise fail("bad-signature", "signature file is missing", str(sig_path)) from None
    if len(signature) != 64 or not signature_valid(public, signature, raw):
        raise fail(
            "bad-signature",
            "Ed25519 signature does not match the file's bytes (certificate or signature altered)",
            str(path),
        )
    result.lines.append(f"issuer: trusted {how}")
    result.lines.append(f"signature: ok (Ed25519, key {signing.get('key_id')})")
    if development:
        result.development_key = True
        result.lines.append("WARNING: signed with a development key: not an issued certificate")
    check_canonical(cert, raw, path)
    result.lines.append("canonical form: ok")
    from greencert.grading import current_scheme_version, is_superseded, version_key

    scheme = cert["scheme"]
    if options.min_scheme and version_key(str(scheme["version"])) < version_key(options.min_scheme):
        raise fail(
            "scheme-too-old",
            f"graded under scheme {scheme['version']}, older than the required {options.min_scheme}",
            str(path),
        )
    if is_superseded(str(scheme["id"]), str(scheme["version"])):
        result.lines.append(
            f"scheme: {scheme['version']} (superseded by {current_scheme_version(str(scheme['id']))})"
        )
    else:
        result.lines.append(f"scheme: {scheme['version']} (current)")
    check_expiry(cert, moment, path)
    result.lines.append(f"expiry: valid until {cert['valid_until']}")
    digest = hashlib.sha256(raw).hexdigest()
    rel = target_path(cert)
    if view is not None:
        target = view.targets.get(rel)
        if target is None:
            raise fail(
                "not-listed",
                f"{rel} is not in the registry's signed metadata (not issued there, or removed)",
                view.location,
            )
        if target.length != len(raw) or target.hashes.get("sha256") != digest:
            raise fail(
                "metadata-mismatch",
                f"the registry's signed metadata lists other bytes for {rel} (mixed or replaced files)",
                str(path),
            )
        status = view.status_of(rel) or {}
        if status.get("status") == "revoked":
            raise fail(
                "revoked",
                f"certificate was revoked at {status.get('revoked_at')}: {status.get('reason')}",
                view.location,
            )
        result.lines.append(
            f"registry status: issued, not revoked (signed registry status v{view.timestamp_version}, fresh until "
            f"{stamp(view.status_expires)})"
        )
    else:
        result.lines.append(
            f"WARNING: revocation status UNKNOWN, accepted because of --offline: {status_problem}"
        )
    proof_path = path.with_name(path.name.removesuffix(".json") + ".log.json")
    try:
        record = json.loads(proof_path.read_bytes())
        head = issuance_log.check_inclusion(record, public, digest)
    except OSError:
        raise fail(
            "log-inclusion", "no issuance-log inclusion proof beside the certificate", str(proof_path)
        ) from None
    except (ValueError, issuance_log.LogProofError) as exc:
        raise fail("log-inclusion", str(exc), str(proof_path)) from None
    if view is not None:
        index = (view.status_of(rel) or {}).get("log_index")
        if index is not None and index != record["leaf_index"]:
            raise fail(
                "log-inclusion",
                f"proof is for log entry {record['leaf_index']}, the signed status names entry {index}",
                str(proof_path),
            )
    result.lines.append(
        f"issuance log: entry {record['leaf_index']} of {head.size}, logged {record['entry'].get('logged_at')} "
        "(inclusion proof ok)"
    )
    bundle = bundle_dir or path.parent / cert["evidence"]["bundle"]
    if not bundle.is_dir():
        raise fail("bundle-missing", "evidence bundle not found (pass --bundle)", str(bundle))
    if bundle.is_symlink():
        raise fail("bundle-missing", "evidence bundle is a symbolic link (not followed)", str(bundle))
    for item in cert["inputs"]:
        f = bundle / item["file"]
        if f.is_symlink():
            raise fail(
                "bundle-missing", f"evidence file {item['file']} is a symbolic link (not followed)", str(f)
            )
        if not f.is_file():
            raise fail("bundle-missing", f"evidence file {item['file']} is missing", str(bundle))
        if sha256_file(f) != item["sha256"]:
            raise fail(
                "input-hash-mismatch", f"sha256 of {item['file']} differs from the certificate", str(f)
            )
    result.lines.append(f"input hashes: ok ({len(cert['inputs'])} files)")
    if is_period_evidence(bundle):
        days = check_days(cert, path, bundle, registry, options)
        result.lines.append(f"days: ok ({len(days)} day certificates verified, each matching its partial)")
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

"""Tamper detection: every single-byte change to a published certificate or its signature fails
``greencert verify`` (hypothesis draws the file, the position and the new byte)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_golden_bundle
from greencert.cli import main
from greencert.pipeline import certify

AT = "2026-01-02T00:00:00Z"  # inside the validity of the golden certificate


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    root = tmp_path_factory.mktemp("tamper")
    private = Ed25519PrivateKey.generate()
    key = root / "issuer.key"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pinned = root / "issuer.pub.pem"
    pinned.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    cert = Path(certify(write_golden_bundle(root / "bundle"), root / "registry", signing_key=key, pdf=False))
    return {
        "certificate": cert,
        "signature": cert.with_name(cert.name + ".sig"),
        "pinned": pinned,
    }


def verify(cert: Path, *extra: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["verify", str(cert), "--at", AT, *extra])
    return code, out.getvalue() + err.getvalue()


def test_the_untouched_certificate_verifies(published: dict[str, Path]) -> None:
    for extra in ((), ("--key", str(published["pinned"]))):
        code, text = verify(published["certificate"], *extra)
        assert code == 0, text
        assert "recomputed figures: ok" in text


# The two files the issue names. (The issuer.pem published beside them is a convenience copy: an
# auditor pins the issuer's key with --key, as the second verify call below does.)
TARGETS = ("certificate", "signature")


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_single_byte_change_is_detected(published: dict[str, Path], data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(TARGETS), label="file")
    path = published[target]
    original = path.read_bytes()
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    # Any byte, or a printable one (which more often keeps the JSON valid and reaches the signature check).
    new = data.draw(
        st.one_of(st.integers(0, 255), st.integers(32, 126)).filter(lambda b: b != original[position]),
        label="new byte",
    )
    path.write_bytes(original[:position] + bytes([new]) + original[position + 1 :])
    try:
        for extra in ((), ("--key", str(published["pinned"]))):
            code, text = verify(published["certificate"], *extra)
            assert code != 0, (target, position, new, text)
            assert text.startswith("error["), text  # a verification reason code, not a crash
    finally:
        path.write_bytes(original)


def test_every_bit_of_the_signature_matters(published: dict[str, Path]) -> None:
    # Exhaustive over the 64 signature bytes (one flipped bit each, low and high).
    path = published["signature"]
    original = path.read_bytes()
    assert len(original) == 64
    try:
        for position in range(64):
            for bit in (0x01, 0x80):
                path.write_bytes(
                    original[:position] + bytes([original[position] ^ bit]) + original[position + 1 :]
                )
                code, text = verify(published["certificate"])
                assert code == 12 and "error[bad-signature]" in text, (position, bit, text)
    finally:
        path.write_bytes(original)


def test_the_sweep_reaches_the_signature_check(published: dict[str, Path]) -> None:
    # A change that keeps the JSON valid and canonical (one digit of a figure) is caught by the signature.
    path = published["certificate"]
    original = path.read_bytes()
    at = original.index(b'"it_energy":{"unit":"kWh","value":') + len(b'"it_energy":{"unit":"kWh","value":')
    digit = original[at : at + 1]
    assert digit.isdigit()
    changed = original[:at] + (b"1" if digit != b"1" else b"2") + original[at + 1 :]
    path.write_bytes(changed)
    try:
        code, text = verify(path)
        assert code == 12 and "error[bad-signature]" in text, text
    finally:
        path.write_bytes(original)

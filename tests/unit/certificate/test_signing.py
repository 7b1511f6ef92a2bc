"""Signing keys: where they come from, what the certificate says about them, and that they stay secret."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from greencert.certificate import sign
from greencert.errors import ConfigError


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv(sign.ENV_HOME, str(home))
    for name in (sign.ENV_KEY, sign.ENV_CONN_ID, sign.ENV_PASSPHRASE):
        monkeypatch.delenv(name, raising=False)
    return home


def test_key_id_is_truncated_sha256_of_spki_der(tmp_path: Path) -> None:
    key = write_key(tmp_path / "k.pem")
    # Reference: the raw 32-byte Ed25519 public key behind the fixed 12-byte SPKI header of RFC 8410.
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    der = bytes.fromhex("302a300506032b6570032100") + raw
    assert sign.key_id(key.public_key()) == hashlib.sha256(der).hexdigest()[:32]


def test_development_key_is_created_once_with_mode_0600(isolated: Path) -> None:
    first = sign.load_signing_key()
    second = sign.load_signing_key()
    path = isolated / "keys" / sign.DEV_KEY_NAME
    assert first.development and second.development
    assert first.key_id == second.key_id  # once per installation, not per call or output folder
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert first.signing_section()["development_key"] is True
    assert not list(path.parent.glob(".dev-key.*")), "temporary key file left behind"


def test_development_key_readable_by_others_is_refused(isolated: Path) -> None:
    sign.load_signing_key()
    path = isolated / "keys" / sign.DEV_KEY_NAME
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        sign.load_signing_key()


def test_explicit_path_beats_env_beats_dev_key(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit = write_key(tmp_path / "explicit.pem")
    from_env = write_key(tmp_path / "env.pem")
    monkeypatch.setenv(sign.ENV_KEY, str(tmp_path / "env.pem"))
    assert sign.load_signing_key(tmp_path / "explicit.pem").key_id == sign.key_id(explicit.public_key())
    chosen = sign.load_signing_key()
    assert chosen.key_id == sign.key_id(from_env.public_key())
    assert chosen.development is False
    assert chosen.signing_section()["development_key"] is False
    assert not (isolated / "keys").exists(), "a dev key was generated although a key was configured"


def test_encrypted_key_needs_passphrase(
    isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "enc.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"correct horse"),
        )
    )
    with pytest.raises(ConfigError, match="GREENCERT_SIGNING_KEY_PASSPHRASE") as info:
        sign.load_signing_key(tmp_path / "enc.pem")
    assert "enc.pem" in str(info.value)
    monkeypatch.setenv(sign.ENV_PASSPHRASE, "correct horse")
    assert sign.load_signing_key(tmp_path / "enc.pem").key_id == sign.key_id(key.public_key())


def test_bad_key_files_name_the_file(isolated: Path, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a PEM private key") as info:
        sign.load_signing_key(tmp_path / "junk.pem")
    assert str(tmp_path / "junk.pem") in str(info.value)
    with pytest.raises(ConfigError, match="cannot read signing key"):
        sign.load_signing_key(tmp_path / "missing.pem")
    from cryptography.hazmat.primitives.asymmetric import ec

    (tmp_path / "ec.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigError, match="not Ed25519"):
        sign.load_signing_key(tmp_path / "ec.pem")


def test_airflow_connection_key(isolated: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Real Airflow Task SDK lookup through its environment-variable secrets backend."""
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_GREENCERT_TEST_SIGNER",
        json.dumps({"conn_type": "generic", "password": private_pem(key).decode()}),
    )
    monkeypatch.setenv(sign.ENV_CONN_ID, "greencert_test_signer")
    loaded = sign.load_signing_key()
    assert loaded.key_id == sign.key_id(key.public_key())
    assert loaded.development is False
    assert loaded.source == "airflow connection greencert_test_signer"
    monkeypatch.setenv(sign.ENV_CONN_ID, "greencert_no_such_connection")
    with pytest.raises(ConfigError, match="is not defined"):
        sign.load_signing_key()


def test_private_key_never_in_repr_or_logs(
    isolated: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = write_key(tmp_path / "k.pem")
    pem = private_pem(key).decode()
    body = pem.splitlines()[1]
    raw_hex = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    ).hex()
    with caplog.at_level(logging.DEBUG, logger="greencert"):
        loaded = sign.load_signing_key(tmp_path / "k.pem")
        sign.load_signing_key()  # generates (and logs) the dev key
    text = repr(loaded) + str(loaded) + caplog.text + json.dumps(loaded.signing_section())
    assert body not in text and raw_hex not in text and "PRIVATE KEY" not in text


def test_signature_is_64_raw_bytes_and_verifies(tmp_path: Path, isolated: Path) -> None:
    loaded = sign.load_signing_key(write_key(tmp_path / "k.pem") and tmp_path / "k.pem")
    data = b'{"a":1}'
    signature = loaded.sign(data)
    assert len(signature) == 64
    assert sign.signature_valid(loaded.public, signature, data)
    assert not sign.signature_valid(loaded.public, signature, b'{"a":2}')
    public = sign.load_public_key_bytes(loaded.public_pem, "test")
    assert sign.key_id(public) == loaded.key_id

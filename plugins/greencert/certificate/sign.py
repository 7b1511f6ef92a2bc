"""Ed25519 signatures over the certificate's RFC 8785 canonical bytes.

Where the private key comes from, first match wins:

1. an explicit path (``publish_stage(signing_key=...)``, ``greencert certify --signing-key``);
2. the environment variable ``GREENCERT_SIGNING_KEY`` (path of a PEM file);
3. an Airflow connection (``GREENCERT_SIGNING_CONN_ID``, or ``greencert_signing_key``
   when already running inside Airflow): the PEM in its password, or in extra ``private_key``.
   Any Airflow secrets backend (Vault, AWS/GCP secret managers...) serves connections too;
4. a development key, generated once per installation under ``$GREENCERT_HOME``
   (default ``$XDG_DATA_HOME/greencert`` or ``~/.local/share/greencert``), mode 0600.
   Certificates signed with it say ``"development_key": true``.

PEM files are PKCS#8 as written by ``openssl genpkey -algorithm ed25519``; an
encrypted one is opened with ``GREENCERT_SIGNING_KEY_PASSPHRASE``. The private
key is never logged, printed or put in an exception message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from greencert.errors import ConfigError

log = logging.getLogger("greencert")

ENV_KEY = "GREENCERT_SIGNING_KEY"
ENV_PASSPHRASE = "GREENCERT_SIGNING_KEY_PASSPHRASE"
ENV_CONN_ID = "GREENCERT_SIGNING_CONN_ID"
ENV_HOME = "GREENCERT_HOME"
DEFAULT_CONN_ID = "greencert_signing_key"
DEV_KEY_NAME = "dev-signing-key.ed25519.pem"
ALGORITHM = "Ed25519"
CANONICALIZATION = "RFC 8785 (JSON Canonicalization Scheme)"


def public_key_der(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(public: Ed25519PublicKey) -> str:
    """First 128 bits (hex) of sha256 over the SubjectPublicKeyInfo DER: ``openssl pkey -pubin -outform DER | sha256sum``."""
    return hashlib.sha256(public_key_der(public)).hexdigest()[:32]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SigningKey:
    """A private signing key and what the certificate says about it. Its repr holds no key material."""

    private: Ed25519PrivateKey = field(repr=False)
    development: bool
    source: str  # where it came from, for logs ("file /etc/...", "airflow connection x"), never the key

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public)

    @property
    def public_pem(self) -> bytes:
        return public_pem(self.public)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def to_raw(self) -> tuple[bytes, bool, str]:
        """The key for a helper process this one started (over a private pipe, never to disk or logs)."""
        raw = self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return raw, self.development, self.source

    @classmethod
    def from_raw(cls, raw: bytes, development: bool, source: str) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw), development, source)

    def signing_section(self) -> dict[str, Any]:
        """The ``signing`` section that goes INTO the signed certificate."""
        return {
            "algorithm": ALGORITHM,
            "canonicalization": CANONICALIZATION,
            "key_id": self.key_id,
            "development_key": self.development,
        }


def _load_pem(data: bytes, where: str) -> Ed25519PrivateKey:
    passphrase = os.environ.get(ENV_PASSPHRASE)
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        # The exception text of cryptography never contains key material, but keep ours generic anyway.
        kind = (
            "encrypted (set GREENCERT_SIGNING_KEY_PASSPHRASE)"
            if b"ENCRYPTED" in data
            else "not a PEM private key"
        )
        raise ConfigError(f"signing key cannot be loaded: {kind} ({type(exc).__name__})", where) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key is {type(key).__name__}, not Ed25519", where)
    return key


def load_key_file(path: str | Path, development: bool = False) -> SigningKey:
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key ({exc.strerror})", str(p)) from None
    return SigningKey(_load_pem(data, str(p)), development, f"file {p}")


def _from_airflow(conn_id: str, required: bool) -> SigningKey | None:
    try:
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowNotFoundException
    except ImportError:
        if required:
            raise ConfigError(f"{ENV_CONN_ID}={conn_id} but Airflow is not installed") from None
        return None
    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        if required:
            raise ConfigError(f"Airflow connection {conn_id!r} is not defined", ENV_CONN_ID) from None
        return None
    pem = conn.password or (conn.extra_dejson or {}).get("private_key")
    if not pem:
        raise ConfigError(
            "Airflow connection holds no key (put the PEM in its password or extra 'private_key')",
            f"connection {conn_id}",
        )
    # Connection URIs and env vars often carry the PEM with literal "\n".
    pem = pem.replace("\\n", "\n")
    return SigningKey(
        _load_pem(pem.encode(), f"connection {conn_id}"), False, f"airflow connection {conn_id}"
    )


def greencert_home() -> Path:
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "greencert"


def development_key(home: Path | None = None) -> SigningKey:
    """The installation's development key, created on first use (race-free: link(2) never overwrites)."""
    folder = (home or greencert_home()) / "keys"
    path = folder / DEV_KEY_NAME
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(prefix=".dev-key.", dir=folder)  # mkstemp creates mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)  # fails if another process won the race: then use its key
                log.warning(
                    "generated a DEVELOPMENT signing key %s; certificates signed with it say so", path
                )
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    if path.stat().st_mode & 0o077:
        raise ConfigError("development signing key is readable by others (chmod 600 it)", str(path))
    key = load_key_file(path, development=True)
    return SigningKey(key.private, True, f"development key {path}")


def load_signing_key(path: str | Path | SigningKey | None = None, conn_id: str | None = None) -> SigningKey:
    """Resolve the signing key (see the module docstring for the order); a resolved key passes through."""
    if isinstance(path, SigningKey):
        return path
    if path:
        return load_key_file(path)
    if os.environ.get(ENV_KEY):
        return load_key_file(os.environ[ENV_KEY])
    explicit_conn = conn_id or os.environ.get(ENV_CONN_ID)
    if explicit_conn:
        key = _from_airflow(explicit_conn, required=True)
        assert key is not None
        return key
    # Inside Airflow (already imported) the default connection is worth a look; from the
    # CLI, importing Airflow just to find nothing would cost seconds per certificate.
    if "airflow.sdk" in sys.modules:
        key = _from_airflow(DEFAULT_CONN_ID, required=False)
        if key is not None:
            return key
    return development_key()


def load_public_key_bytes(pem: bytes, where: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"not a PEM public key ({exc})", where) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key is {type(key).__name__}, not Ed25519", where)
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key ({exc.strerror})", str(p)) from None
    return load_public_key_bytes(data, str(p))


def signature_valid(public: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return False
    return True

"""The trust store: the issuer keys a user has decided to trust.

A certificate is only ever accepted under a key the verifier chose: pinned on the command line
(``greencert verify --key ISSUER.pem``) or listed here. The store is one JSON file, by default
``$GREENCERT_HOME/trust.json``; ``GREENCERT_TRUST_STORE`` (or ``--trust-store``) names another, which is
how CI or an auditor's laptop passes one in. Entries record the key id (``signing.key_id`` of the
certificates), the PEM, a name and whether the key is a development key.

The installation that signs with a key trusts it (``trust_signing_key`` on publication): an issuer
needs no extra step to list its own registry, and no other machine learns to trust it that way.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from greencert.errors import ConfigError

ENV_TRUST_STORE = "GREENCERT_TRUST_STORE"
STORE_FORMAT = "greencert-trust-store/1"


@dataclass(frozen=True)
class TrustAnchor:
    """An issuer key the verifier trusts, and why."""

    key_id: str
    public: Ed25519PublicKey
    name: str
    origin: str  # "pinned with --key FILE", "trust store FILE"
    development: bool = False

    def describe(self) -> str:
        dev = ", development key" if self.development else ""
        return f"{self.name} (key {self.key_id}{dev}; {self.origin})"


def store_path(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_TRUST_STORE, "").strip():
        return Path(os.environ[ENV_TRUST_STORE]).expanduser()
    from greencert.certificate.sign import greencert_home

    return greencert_home() / "trust.json"


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_bytes())
        entries = document["issuers"]
        if document.get("format") != STORE_FORMAT or not isinstance(entries, list):
            raise ValueError("unknown format")
        for entry in entries:
            if not isinstance(entry, dict) or not {"key_id", "public_key_pem", "name"} <= set(entry):
                raise ValueError("an entry lacks key_id, public_key_pem or name")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"trust store is unreadable ({exc})", str(path)) from None
    return entries


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    from greencert.atomic import atomic_write_bytes

    document = {"format": STORE_FORMAT, "issuers": sorted(entries, key=lambda e: e["key_id"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())


def load_anchors(explicit_store: str | Path | None = None) -> list[TrustAnchor]:
    """Every key of the trust store (an absent store is empty: nothing is trusted by default)."""
    from greencert.certificate.sign import key_id, load_public_key_bytes

    path = store_path(explicit_store)
    out = []
    for entry in _read(path):
        public = load_public_key_bytes(entry["public_key_pem"].encode(), f"{path} ({entry['key_id']})")
        if key_id(public) != entry["key_id"]:
            raise ConfigError(f"entry {entry['key_id']} holds a different key", str(path))
        out.append(
            TrustAnchor(
                entry["key_id"], public, entry["name"], f"trust store {path}", bool(entry.get("development"))
            )
        )
    return out


def pinned_anchor(pem_path: str | Path, development: bool = False) -> TrustAnchor:
    from greencert.certificate.sign import key_id, load_public_key

    public = load_public_key(pem_path)
    return TrustAnchor(
        key_id(public), public, Path(pem_path).name, f"pinned with --key {pem_path}", development
    )


def resolve_anchors(
    pinned: list[str | Path] | None = None, store: str | Path | None = None, use_store: bool = True
) -> list[TrustAnchor]:
    """The anchors for one check: pinned keys first, then the trust store (unless only pinned ones count)."""
    anchors = [pinned_anchor(p) for p in pinned or []]
    if use_store:
        known = {a.key_id for a in anchors}
        anchors += [a for a in load_anchors(store) if a.key_id not in known]
    return anchors


def add(
    pem_path: str | Path, name: str | None = None, development: bool = False, store: str | Path | None = None
) -> TrustAnchor:
    """Trust the key in ``pem_path`` (idempotent; a new name or flag replaces the old entry)."""
    from greencert.certificate.sign import public_pem

    anchor = pinned_anchor(pem_path, development)
    path = store_path(store)
    entries = [e for e in _read(path) if e["key_id"] != anchor.key_id]
    entries.append(
        {
            "key_id": anchor.key_id,
            "name": name or anchor.name,
            "public_key_pem": public_pem(anchor.public).decode(),
            "development": development,
            "added_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    _write(path, entries)
    return TrustAnchor(anchor.key_id, anchor.public, name or anchor.name, f"trust store {path}", development)


def remove(key_id: str, store: str | Path | None = None) -> bool:
    path = store_path(store)
    entries = _read(path)
    kept = [e for e in entries if e["key_id"] != key_id]
    if len(kept) == len(entries):
        return False
    _write(path, kept)
    return True


def trust_signing_key(key: Any, store: str | Path | None = None) -> None:
    """Record the key this installation signs with (no write when it is already there, unchanged)."""
    path = store_path(store)
    try:
        entries = _read(path)
    except ConfigError:
        return  # a damaged store is reported where it is read for verification, not at publication
    if any(e["key_id"] == key.key_id and bool(e.get("development")) == key.development for e in entries):
        return
    entries = [e for e in entries if e["key_id"] != key.key_id]
    entries.append(
        {
            "key_id": key.key_id,
            "name": "development key of this installation"
            if key.development
            else "this installation's signing key",
            "public_key_pem": key.public_pem.decode(),
            "development": key.development,
            "added_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    try:
        _write(path, entries)
    except OSError:
        pass  # a read-only home must not stop publication; verification elsewhere pins keys anyway

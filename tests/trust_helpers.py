"""Writing registry certificates as publication does (signed, logged, listed in signed metadata)."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

from greencert.certificate import registry as reg
from greencert.certificate.build import canonical_bytes


def put(root: Path, cert: dict[str, Any], key: Any = None) -> Path:
    """Write ``cert`` signed with ``key`` (the installation's key by default; ``False``: unsigned)."""
    from greencert.certificate.sign import load_signing_key

    folder = reg.registry_root(root) / cert["scope"]["site"] / cert["scope"]["deployment"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cert['certificate_id']}.json"
    if key is not False:
        key = load_signing_key(key)
        cert = {**cert, "signing": key.signing_section()}
        (folder / f"{cert['certificate_id']}.json.sig").write_bytes(key.sign(canonical_bytes(cert)))
    else:
        cert = {**cert, "signing": {"key_id": "00" * 16, "development_key": False}}
    path.write_bytes(canonical_bytes(cert))
    (folder / f"{cert['certificate_id']}.html").write_text("<p>label</p>")
    return path


def new_registry(root: Path) -> Path:
    """A new registry: its trust metadata exists before the first certificate, as on publication."""
    from greencert.certificate.sign import load_signing_key

    reg.ensure_trust_metadata(reg.registry_root(root), load_signing_key())
    return root


def publish_all(root: Path, at: dt.datetime | None = None) -> Path:
    """What publication does after writing files: log, signed metadata, index (with the issuer key)."""
    from greencert.certificate.sign import load_signing_key

    return reg.rebuild_index(root, at, signing_key=load_signing_key())


def is_registry_state(rel: str) -> bool:
    """Registry-wide signed state (TUF metadata, issuance log and its proofs) and the index: rewritten by
    every publication with the time it was signed, so never byte-equal across runs; verification
    checks them instead."""
    name = rel.rsplit("/", 1)[-1]
    return (
        name in ("index.json", "index.html")
        or rel.startswith(("metadata/", "log/"))
        or rel.endswith(".log.json")
    )


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=check)


def new_key(folder: Path, name: str) -> tuple[Path, Path]:
    """A private key and its public PEM, made by openssl (independently of the code under test)."""
    private, public = folder / f"{name}.key.pem", folder / f"{name}.pub.pem"
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(private))
    openssl("pkey", "-in", str(private), "-pubout", "-out", str(public))
    return private, public


def run_cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """``greencert ARGS`` in this process: exit code, stdout, stderr."""
    from greencert.cli import main

    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err

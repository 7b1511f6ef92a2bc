"""Attacks on trust, one test each, written from the threat (docs/trust.md, "Threat model").

Keys are made with ``openssl genpkey``; the registry status is read through python-tuf's own client
(``tuf.ngclient.Updater``); each attack is carried out on a private copy of a real registry, as
someone who can write the registry (but holds no issuer key) would, and must end in the exit code
of its reason. The expected outcome is what the threat demands, not what the code happens to print.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from conftest import write_golden_bundle
from greencert.certificate.build import canonical_bytes
from greencert.certificate.verify import EXIT_CODES
from greencert.pipeline import certify
from trust_helpers import new_key, openssl, run_cli

pytestmark = pytest.mark.integration

AT = "2026-03-01T00:00:00Z"  # inside the golden certificate's validity


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return run_cli(capsys, *args)


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One certificate published with an openssl-made issuer key, and the graded stage behind it."""
    base = tmp_path_factory.mktemp("attacks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENCERT_HOME", str(base / "issuer-home"))
        mp.delenv("GREENCERT_SIGNING_KEY", raising=False)
        private, public = new_key(base, "issuer")
        bundle = write_golden_bundle(base / "bundle")
        cert = Path(certify(bundle, base / "registry", work_dir=base / "work", signing_key=private, pdf=False))
    return {"base": base, "private": private, "public": public, "cert": cert, "bundle": bundle,
            "registry": base / "registry", "work": base / "work"}  # fmt: skip


@pytest.fixture
def reg(origin: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A private copy of the registry, an auditor home of its own (empty trust store, no TUF cache)."""
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "auditor-home"))
    monkeypatch.delenv("GREENCERT_TRUST_STORE", raising=False)
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    root = tmp_path / "registry"
    shutil.copytree(origin["registry"], root)
    cert = root / origin["cert"].relative_to(origin["registry"])
    return {**origin, "root": root, "cert": cert, "tmp": tmp_path}


def verify(capsys, reg: dict[str, Path], *extra: str, cert: Path | None = None) -> tuple[int, str, str]:
    return cli(capsys, "verify", str(cert or reg["cert"]), "--at", AT, *extra)


def pinned(reg: dict[str, Path]) -> tuple[str, str]:
    return ("--key", str(reg["public"]))


def revoke(capsys, reg: dict[str, Path]) -> None:
    code, _, err = cli(capsys, "revoke", reg["cert"].name.removesuffix(".json"), "--registry", str(reg["root"]),
                       "--reason", "meter fault", "--signing-key", str(reg["private"]))  # fmt: skip
    assert code == 0, err


def forge(reg: dict[str, Path], private: Path, public: Path, change: dict) -> Path:
    """Rewrite the certificate with ``change``, sign it with ``private`` and put ``public`` beside it."""
    from greencert.certificate.sign import key_id, load_public_key

    cert = reg["cert"]
    doc = json.loads(cert.read_bytes())
    doc.update(change)
    doc["signing"]["key_id"] = key_id(load_public_key(public))
    cert.write_bytes(canonical_bytes(doc))
    openssl("pkeyutl", "-sign", "-inkey", str(private), "-rawin", "-in", str(cert), "-out", f"{cert}.sig")
    shutil.copy(public, cert.with_name(cert.name.removesuffix(".json") + ".issuer.pem"))
    shutil.copy(public, reg["root"] / "issuer.pem")
    return cert


# ------------------------------------------------------------------------------------ forged issuer


def test_a_key_beside_the_file_is_never_trusted(reg, capsys) -> None:
    """Forgery signed with the attacker's key, published with that key beside it and as issuer.pem."""
    evil_private, evil_public = new_key(reg["tmp"], "attacker")
    forge(reg, evil_private, evil_public, {"grade": "A"})
    code, _, err = verify(capsys, reg)  # auditor trusts nothing yet
    assert code == EXIT_CODES["untrusted-issuer"] == 20, err
    code, _, err = verify(capsys, reg, *pinned(reg))  # auditor pins the real issuer
    assert code == EXIT_CODES["untrusted-issuer"], err
    from greencert.certificate.sign import key_id, load_public_key

    assert key_id(load_public_key(evil_public)) in err  # names the key id it saw


def test_a_whole_forged_registry_is_untrusted(reg, capsys) -> None:
    """The attacker builds a complete registry of its own (own TUF root, own log) with its own key."""
    evil_private, evil_public = new_key(reg["tmp"], "attacker")
    fake = reg["tmp"] / "fake"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENCERT_HOME", str(reg["tmp"] / "attacker-home"))
        cert = Path(certify(reg["bundle"], fake, signing_key=evil_private, pdf=False))
    code, _, err = verify(capsys, reg, *pinned(reg), cert=cert)
    assert code == EXIT_CODES["untrusted-issuer"], err
    assert "no root of the registry's metadata is signed by a key you trust" in err


def test_trust_store_add_list_remove(reg, capsys) -> None:
    code, out, err = cli(capsys, "trust", "add", str(reg["public"]), "--name", "Example Issuer")
    assert code == 0, err
    code, out, _ = cli(capsys, "trust", "list")
    assert "Example Issuer" in out and "1 trusted issuer key(s)" in out
    code, out, err = verify(capsys, reg)
    assert code == 0, err
    assert "issuer: trusted Example Issuer" in out
    kid = out.split("(key ", 1)[1].split(";", 1)[0]
    assert cli(capsys, "trust", "remove", kid)[0] == 0
    assert verify(capsys, reg)[0] == EXIT_CODES["untrusted-issuer"]


def test_a_trust_store_can_be_passed_in(reg, capsys, monkeypatch) -> None:
    store = reg["tmp"] / "ci-trust.json"
    assert cli(capsys, "trust", "add", str(reg["public"]), "--trust-store", str(store))[0] == 0
    monkeypatch.setenv("GREENCERT_TRUST_STORE", str(store))
    code, out, err = cli(capsys, "registry", "list", str(reg["root"]), "--at", AT)
    assert code == 0 and " valid" in out, (out, err)


# ------------------------------------------------------------------------------- registry entries


def test_an_unsigned_certificate_dropped_into_the_registry_is_unverified(reg, capsys) -> None:
    """A registry writer copies the certificate under another deployment with a better grade, no signature."""
    doc = json.loads(reg["cert"].read_bytes())
    doc["grade"] = "A"
    doc["scope"]["deployment"] = "forged"
    doc["certificate_id"] = doc["certificate_id"].replace("golden-8b", "forged")
    folder = reg["root"] / doc["scope"]["site"] / "forged"
    folder.mkdir()
    dropped = folder / f"{doc['certificate_id']}.json"
    dropped.write_bytes(canonical_bytes(doc))
    # The issuer publishes again later (index rebuilt with its key): the drop-in is not adopted.
    assert cli(capsys, "registry", "refresh", str(reg["root"]), "--signing-key", str(reg["private"]))[0] == 0
    index = json.loads((reg["root"] / "index.json").read_bytes())
    status = {r["certificate_id"]: r["status"] for r in index["certificates"]}
    assert status[doc["certificate_id"]] == "unverified"
    assert "unverified" in (reg["root"] / "index.html").read_text()
    code, out, _ = cli(capsys, "summary", str(reg["root"]), "--key", str(reg["public"]))
    forged_line = next(line for line in out.splitlines() if "forged" in line)
    assert "unverified" in forged_line and "valid" not in forged_line.replace("unverified", "")
    assert verify(capsys, reg, *pinned(reg), cert=dropped)[0] == EXIT_CODES["bad-signature"]  # no signature


def test_mix_and_match_an_older_signed_version_is_refused(reg, capsys) -> None:
    """Re-issued (corrected) certificate under the same id; the attacker puts the old signed bytes back."""
    from greencert.certificate.issue import publish_certificate

    old = {p.name: p.read_bytes() for p in reg["cert"].parent.iterdir() if p.is_file()}
    graded = json.loads((reg["work"] / "graded.json").read_text())
    graded["metrics"]["it_energy"]["value"] *= 1.01  # a corrected figure: new bytes, same id
    publish_certificate(graded, reg["bundle"], (reg["work"] / "validation.json").read_bytes(),
                        reg["root"], reg["private"], False)  # fmt: skip
    for name in (reg["cert"].name, reg["cert"].name + ".sig"):
        (reg["cert"].parent / name).write_bytes(old[name])
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["metadata-mismatch"] == 24, err


# ---------------------------------------------------------------------------------- revocation


def test_revocation_stays_revoked_against_rollback_deletion_and_copy_out(reg, capsys) -> None:
    before = reg["tmp"] / "metadata-before"
    shutil.copytree(reg["root"] / "metadata", before)
    assert verify(capsys, reg, *pinned(reg))[0] == 0  # the auditor has seen the registry once
    revoke(capsys, reg)
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["revoked"] == 15 and "meter fault" in err
    # 1. Rollback: the metadata from before the revocation is put back.
    shutil.rmtree(reg["root"] / "metadata")
    shutil.copytree(before, reg["root"] / "metadata")
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["rollback"] == 25, err
    # 2. Deletion: no metadata at all.
    shutil.rmtree(reg["root"] / "metadata")
    code, _, err = verify(capsys, reg, *pinned(reg), "--registry", str(reg["root"]))
    assert code == EXIT_CODES["status-unknown"] == 22, err
    # ...and the issuer's next publication refuses to start a new, empty history.
    code, _, err = cli(capsys, "registry", "refresh", str(reg["root"]), "--signing-key", str(reg["private"]))
    assert code == 5 and "no trust metadata" in err


def test_a_copied_out_certificate_needs_a_fresh_signed_status(reg, capsys) -> None:
    revoke(capsys, reg)
    away = reg["tmp"] / "away"
    away.mkdir()
    stem = reg["cert"].name.removesuffix(".json")
    for p in reg["cert"].parent.iterdir():
        if p.name.startswith(stem):
            (shutil.copytree if p.is_dir() else shutil.copy)(p, away / p.name)
    copied = away / reg["cert"].name
    code, _, err = verify(capsys, reg, *pinned(reg), cert=copied)
    assert code == EXIT_CODES["status-unknown"], err  # no status: not accepted
    # With only a recent copy of the signed status (the metadata folder), it is revoked.
    status_copy = reg["tmp"] / "status-copy"
    shutil.copytree(reg["root"] / "metadata", status_copy / "metadata")
    code, _, err = verify(capsys, reg, *pinned(reg), "--registry", str(status_copy), cert=copied)
    assert code == EXIT_CODES["revoked"], err
    # --offline accepts an unknown status explicitly, and says so.
    code, out, err = verify(capsys, reg, *pinned(reg), "--offline", cert=copied)
    assert code == 0, err
    assert "revocation status UNKNOWN" in out


def test_a_frozen_registry_is_status_unknown(reg, capsys) -> None:
    """The registry stops being re-signed (a freeze hides later revocations): once the signed status
    expires, verification fails instead of trusting the stale state."""
    from greencert.certificate.registry import registry_lock, update_trust
    from greencert.certificate.sign import load_key_file

    stale = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    with registry_lock(reg["root"]):
        update_trust(reg["root"], load_key_file(reg["private"]), moment=stale)
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["status-unknown"], err
    assert "expired" in err


def test_edited_metadata_does_not_verify(reg, capsys) -> None:
    """Flip the revoked status off in the signed targets (keeping the signature): the client rejects it."""
    revoke(capsys, reg)
    meta = reg["root"] / "metadata"
    newest = max(meta.glob("*.targets.json"), key=lambda p: int(p.name.split(".")[0]))
    newest.write_bytes(newest.read_bytes().replace(b'"status":"revoked"', b'"status":"issued"'))
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["bad-metadata"] == 26, err


# --------------------------------------------------------------------------------- issuance log


def test_inclusion_proof_is_required_and_checked(reg, capsys) -> None:
    proof = reg["cert"].with_name(reg["cert"].name.removesuffix(".json") + ".log.json")
    record = json.loads(proof.read_bytes())
    record["entry"]["logged_at"] = "2025-01-01T00:00:00Z"  # back-dated entry: no longer the logged leaf
    proof.write_text(json.dumps(record))
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["log-inclusion"] == 27, err
    proof.unlink()
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["log-inclusion"] and "no issuance-log inclusion proof" in err


def test_log_consistency_between_tree_heads(reg, capsys) -> None:
    head = reg["root"] / "log" / "tree-head.json"
    old = reg["tmp"] / "old-head.json"
    shutil.copy(head, old)
    revoke(capsys, reg)  # appends an entry: the log grows
    code, out, err = cli(capsys, "log", "consistency", str(reg["root"]), "--old", str(old), *pinned(reg))
    assert code == 0 and "1 entries" in out and "2 entries" in out, err
    # The issuer (or anyone) rewrites history: the first entry changes.
    entries = reg["root"] / "log" / "entries.jsonl"
    lines = entries.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"type":"issue"', b'"type":"issue","note":"x"')
    entries.write_bytes(b"\n".join(lines))
    code, _, err = cli(capsys, "log", "consistency", str(reg["root"]), "--old", str(old), *pinned(reg))
    assert code == 27 and "log-inconsistent" in err
    # ...and the issuer's own next publication refuses to build on it.
    code, _, err = cli(capsys, "registry", "refresh", str(reg["root"]), "--signing-key", str(reg["private"]))
    assert code == 5 and "issuance log was altered" in err


# ------------------------------------------------------------------------------ keys and schemes


def test_key_rotation_and_compromise(reg, capsys) -> None:
    new_private, new_public = new_key(reg["tmp"], "new-issuer")
    code, _, err = cli(capsys, "registry", "rotate-key", str(reg["root"]), "--old-key", str(reg["private"]),
                       "--new-key", str(new_private))  # fmt: skip
    assert code == 0, err
    # Routine rotation: an auditor who pinned the old key still verifies old certificates...
    assert verify(capsys, reg, *pinned(reg))[0] == 0
    # ...and one who pinned only the new key follows the root chain to the same result.
    assert verify(capsys, reg, "--key", str(new_public))[0] == 0
    # After a compromise the old key is dropped: what it signed stops verifying, whoever is pinned.
    third_private, _ = new_key(reg["tmp"], "third")
    code, _, err = cli(capsys, "registry", "rotate-key", str(reg["root"]), "--old-key", str(new_private),
                       "--new-key", str(third_private), "--compromised")  # fmt: skip
    assert code == 0, err
    code, _, err = verify(capsys, reg, "--key", str(new_public))
    assert code == EXIT_CODES["untrusted-issuer"], err
    # The compromised key alone cannot publish any more.
    code, _, err = cli(capsys, "registry", "refresh", str(reg["root"]), "--signing-key", str(reg["private"]))
    assert code == 5 and "not this registry's issuer key" in err


def test_minimum_scheme(reg, capsys) -> None:
    code, _, err = verify(capsys, reg, *pinned(reg), "--min-scheme", "2099.1")
    assert code == EXIT_CODES["scheme-too-old"] == 28, err


def test_a_resigned_certificate_without_validity_is_a_clear_error(reg, capsys) -> None:
    """Signed by the real issuer (a bug, or a stolen key) but missing valid_until: no traceback."""
    doc = json.loads(reg["cert"].read_bytes())
    del doc["valid_until"]
    reg["cert"].write_bytes(canonical_bytes(doc))
    openssl("pkeyutl", "-sign", "-inkey", str(reg["private"]), "-rawin", "-in", str(reg["cert"]),
            "-out", f"{reg['cert']}.sig")  # fmt: skip
    code, _, err = verify(capsys, reg, *pinned(reg))
    assert code == EXIT_CODES["unreadable"] and "lacks valid_until" in err


def test_status_read_over_http_from_a_local_server(reg, capsys) -> None:
    """The signed status can come from a web server (python-tuf's own HTTP fetcher; loopback here)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(reg["root"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, err = verify(capsys, reg, *pinned(reg), "--registry", url)
        assert code == 0, err
        assert "status: issued, not revoked" in out
        revoke(capsys, reg)
        code, _, err = verify(capsys, reg, *pinned(reg), "--registry", url)
        assert code == EXIT_CODES["revoked"], err
    finally:
        server.shutdown()
        server.server_close()

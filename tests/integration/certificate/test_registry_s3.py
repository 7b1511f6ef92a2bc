"""An ``s3://`` registry on a real S3-protocol server: moto's standalone server on 127.0.0.1.

What is checked against the server (not a mock of the client): its conditional writes are what
the registry's registry-wide updates rely on (``If-None-Match: *`` creates only, ``If-Match: <etag>``
replaces only what was read, 412 otherwise); ``greencert certify`` publishes into ``s3://``,
``greencert registry list`` and ``greencert verify --registry s3://...`` read it back; two
publishers racing for one metadata version cannot both win (the loser rebuilds on top).
Concurrent publishers under load, and killed ones, are in test_registry_load.py.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import registry_load as load  # noqa: E402

pytestmark = pytest.mark.integration
GREENCERT = [sys.executable, "-c", "import sys; from greencert.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture(scope="module")
def s3() -> load.MotoS3:
    server = load.MotoS3()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("s3-stages")
    return {"key": load.write_key(root / "issuer.key"), "stages": load.make_stages(root / "inputs", 4)}


def _env(s3: load.MotoS3, home: Path) -> dict[str, str]:
    return {**load._env(s3.env), "GREENCERT_HOME": str(home)}


def test_the_server_enforces_the_conditional_writes_the_registry_relies_on(s3: load.MotoS3) -> None:
    from greencert.files import Conflict, put_if, read_tagged, registry_root

    path = registry_root(f"s3://{s3.bucket}/primitives") / "object.json"
    assert read_tagged(path) == (None, None)
    put_if(path, b"one", None, create=True)
    with pytest.raises(Conflict):
        put_if(path, b"two", None, create=True)  # If-None-Match: * on an existing object
    data, tag = read_tagged(path)
    assert data == b"one" and tag
    put_if(path, b"three", tag)  # If-Match with the current ETag: replaced
    with pytest.raises(Conflict):
        put_if(path, b"four", tag)  # the same, now stale, ETag: refused
    assert read_tagged(path)[0] == b"three"


def test_two_writers_racing_for_one_version_cannot_both_win(s3: load.MotoS3) -> None:
    """Ten threads replace one object, each from the ETag it read: exactly one wins each round."""
    from greencert.files import Conflict, put_if, read_tagged, registry_root

    path = registry_root(f"s3://{s3.bucket}/race") / "counter"
    put_if(path, b"0", None, create=True)
    wins: list[int] = []
    barrier = threading.Barrier(10)

    def writer(i: int) -> None:
        data, tag = read_tagged(path)
        barrier.wait(timeout=120)
        try:
            put_if(path, str(i + 1).encode(), tag)
            wins.append(i)
        except Conflict:
            pass

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(wins) == 1
    assert read_tagged(path)[0] == str(wins[0] + 1).encode()


def test_certify_list_and_verify_an_s3_registry(s3: load.MotoS3, stages: dict, tmp_path: Path) -> None:
    from greencert.files import registry_root

    registry = f"s3://{s3.bucket}/cli"
    key = stages["key"]
    env = _env(s3, tmp_path / "home")
    for stage in stages["stages"][:2]:
        proc = subprocess.run(
            [*GREENCERT, "certify", stage["bundle"], "--out", registry,
             "--signing-key", str(key), "--no-pdf"],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        assert f"certificate {stage['id']}:" in proc.stdout
    at = (load.AT).strftime("%Y-%m-%dT%H:%M:%SZ")
    listing = subprocess.run(
        [*GREENCERT, "registry", "list", registry, "--json", "--at", at,
         "--key", f"{key}.pub"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-3000:]
    rows = json.loads(listing.stdout)
    rows = rows["certificates"] if isinstance(rows, dict) else rows
    assert sorted(r["certificate_id"] for r in rows) == sorted(s["id"] for s in stages["stages"][:2])
    assert {r["verification"] for r in rows} == {"ok"}
    # An auditor downloads one certificate and verifies it against the registry's signed status on S3.
    stage = stages["stages"][0]
    row = next(r for r in rows if r["certificate_id"] == stage["id"])
    local = tmp_path / "copy" / Path(row["paths"]["json"]).name
    local.parent.mkdir()
    local.write_bytes((registry_root(registry) / row["paths"]["json"]).read_bytes())
    sig = (registry_root(registry) / row["paths"]["sig"]).read_bytes()
    Path(f"{local}.sig").write_bytes(sig)
    stem = local.name.removesuffix(".json")
    Path(local.with_name(f"{stem}.log.json")).write_bytes(
        (registry_root(registry) / row["paths"]["log_proof"]).read_bytes()
    )
    verify = subprocess.run(
        [*GREENCERT, "verify", str(local), "--registry", registry, "--key",
         f"{key}.pub", "--bundle", stage["bundle"], "--at", at],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr[-3000:]
    assert "status: issued, not revoked" in verify.stdout
    # Nothing but the registry's own objects: no temporaries on the store.
    names = registry_root(registry).fs.find(f"{s3.bucket}/cli")
    assert not [n for n in names if any(part.startswith(".") for part in n.split("/"))], names


def test_revocation_on_s3_is_signed_and_seen(
    s3: load.MotoS3, stages: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from greencert.certificate.registry import list_certificates, revoke
    from greencert.certificate.sign import key_id, load_public_key
    from greencert.pipeline import publish_stage
    from greencert.trust.store import TrustAnchor

    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    registry = f"s3://{s3.bucket}/revoke"
    stage = stages["stages"][2]
    publish_stage(stage["graded"], stage["bundle"], stage["validation"], registry, stages["key"], pdf=False)
    revoke(registry, stage["id"], "superseded by a corrected meter reading", stages["key"], at=load.T0)
    public = load_public_key(f"{stages['key']}.pub")
    anchors = [TrustAnchor(key_id(public), public, "issuer", "test key")]
    [row] = list_certificates(registry, load.T0 + dt.timedelta(days=1), anchors)
    assert row["status"] == "revoked"
    assert row["revocation"]["reason"] == "superseded by a corrected meter reading"

"""Registry: listing, statuses (valid/superseded/expired/revoked/unverified), index files, escaping, path safety."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from greencert.certificate import registry as reg
from greencert.errors import ConfigError
from trust_helpers import new_registry, publish_all, put

AT = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def cert_doc(site: str, deployment: str, day: int, *, valid_until: str = "2026-07-01T00:00:00Z", **scope):
    start = f"2026-01-{day:02d}T00:00:00Z"
    end = f"2026-01-{day + 1:02d}T00:00:00Z"
    cid = f"{site}.{deployment}.202601{day:02d}T0000Z-202601{day + 1:02d}T0000Z"
    return {
        "certificate_format": "greencert-certificate/1",
        "certificate_id": cid,
        "scope": {"site": site, "deployment": deployment, "model": "m-8b", **scope},
        "period": {"start": start, "end": end},
        "issued_at": end,
        "valid_until": valid_until,
        "grade": "B",
        "metrics": {
            "energy_per_million_tokens": {"value": 0.05 * day, "unit": "kWh/Mtok"},
            "carbon_per_million_tokens": {"value": 20.0 * day, "unit": "gCO2e/Mtok"},
        },
        "scheme": {"id": "greencert-inference", "version": "2026.1"},
    }


@pytest.fixture
def populated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GREENCERT_SIGNING_KEY", raising=False)
    monkeypatch.delenv("GREENCERT_TRUST_STORE", raising=False)
    root = new_registry(tmp_path / "registry")
    put(root, cert_doc("dc-a", "chat", 1))
    put(root, cert_doc("dc-a", "chat", 2))  # newer period: supersedes day 1
    put(root, cert_doc("dc-a", "code", 1, valid_until="2026-02-01T00:00:00Z"))  # expired at AT
    put(root, cert_doc("dc-b", "chat", 1))  # same deployment name, other site: its own scope
    # Files that are not certificates must be ignored.
    (root / "dc-a" / "chat" / "notes.json").write_text('{"hello": 1}')
    (root / "dc-a" / "chat" / "x.validation.json").write_text('{"certificate_id": "no"}')
    publish_all(root, AT)
    return root


def test_statuses(populated: Path) -> None:
    reg.revoke(populated, "dc-b.chat.20260101T0000Z-20260102T0000Z", "meter fault", at=AT)
    rows = {r["certificate_id"]: r for r in reg.list_certificates(populated, AT)}
    assert set(rows) == {
        "dc-a.chat.20260101T0000Z-20260102T0000Z",
        "dc-a.chat.20260102T0000Z-20260103T0000Z",
        "dc-a.code.20260101T0000Z-20260102T0000Z",
        "dc-b.chat.20260101T0000Z-20260102T0000Z",
    }
    old, new = (
        rows["dc-a.chat.20260101T0000Z-20260102T0000Z"],
        rows["dc-a.chat.20260102T0000Z-20260103T0000Z"],
    )
    assert old["status"] == "superseded" and old["superseded_by"] == new["certificate_id"]
    assert new["status"] == "valid" and new["superseded_by"] is None
    assert rows["dc-a.code.20260101T0000Z-20260102T0000Z"]["status"] == "expired"
    revoked = rows["dc-b.chat.20260101T0000Z-20260102T0000Z"]
    assert revoked["status"] == "revoked"
    assert revoked["revocation"] == {"reason": "meter fault", "revoked_at": "2026-03-01T00:00:00Z"}
    assert new["paths"]["json"] == f"dc-a/chat/{new['certificate_id']}.json"
    assert new["paths"]["label"] == f"dc-a/chat/{new['certificate_id']}.html"
    assert new["paths"]["sig"] == f"dc-a/chat/{new['certificate_id']}.json.sig"
    assert new["paths"]["log_proof"] == f"dc-a/chat/{new['certificate_id']}.log.json"
    assert new["paths"]["pdf"] is None
    assert all(r["verification"] == "ok" for r in rows.values())
    assert new["energy_kwh_per_mtok"] == pytest.approx(0.1) and new["carbon_gco2e_per_mtok"] == 40.0
    # After the validity of every certificate, all are expired except the revoked one.
    later = {
        r["certificate_id"]: r["status"] for r in reg.list_certificates(populated, AT.replace(year=2027))
    }
    assert sorted(later.values()) == ["expired", "expired", "expired", "revoked"]


def test_unsigned_or_foreign_certificates_are_unverified_and_supersede_nothing(
    populated: Path, tmp_path: Path
) -> None:
    """Attack: a registry writer drops in certificates of its own (unsigned, or signed by another key,
    or a listed certificate's bytes changed). None shows as valid, none retires a real one."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from greencert.certificate.sign import SigningKey

    put(populated, cert_doc("dc-a", "chat", 5), key=False)  # unsigned, newer period than day 2
    foreign = SigningKey(Ed25519PrivateKey.generate(), False, "attacker")
    put(populated, cert_doc("dc-b", "chat", 6), key=foreign)
    publish_all(populated)  # the issuer's next publication must not adopt them either
    listed = populated / "dc-a" / "code" / "dc-a.code.20260101T0000Z-20260102T0000Z.json"
    listed.write_bytes(listed.read_bytes().replace(b'"grade":"B"', b'"grade":"A"'))
    rows = {r["certificate_id"]: r for r in reg.list_certificates(populated, AT)}
    assert rows["dc-a.chat.20260105T0000Z-20260106T0000Z"]["status"] == "unverified"
    assert "not listed" in rows["dc-a.chat.20260105T0000Z-20260106T0000Z"]["verification"]
    assert rows["dc-b.chat.20260106T0000Z-20260107T0000Z"]["status"] == "unverified"
    assert rows["dc-a.code.20260101T0000Z-20260102T0000Z"]["status"] == "unverified"
    assert "differ" in rows["dc-a.code.20260101T0000Z-20260102T0000Z"]["verification"]
    # The real newest certificate of dc-a/chat is still valid (the drop-in did not supersede it).
    assert rows["dc-a.chat.20260102T0000Z-20260103T0000Z"]["status"] == "valid"
    assert rows["dc-b.chat.20260101T0000Z-20260102T0000Z"]["status"] == "valid"


def test_listing_without_trust_shows_everything_unverified(populated: Path) -> None:
    """A reader whose trust store does not hold the issuer key sees no valid certificate."""
    rows = reg.list_certificates(populated, AT, anchors=[])
    assert {r["status"] for r in rows} == {"unverified"}
    assert all("untrusted-issuer" in r["verification"] for r in rows)


def test_rebuild_index_json_and_html(populated: Path) -> None:
    put(populated, cert_doc("dc-c", "evil", 1, model="<script>alert(1)</script>"))
    publish_all(populated)
    path = reg.rebuild_index(populated, AT)
    index = json.loads(path.read_text())
    assert index["status_at"] == "2026-03-01T00:00:00Z"
    assert index["counts"] == {"valid": 3, "superseded": 1, "expired": 1, "revoked": 0, "unverified": 0}
    assert index["trust"]["problem"] is None and index["trust"]["root_version"] == 1
    assert len(index["certificates"]) == 5
    html = (populated / "index.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for row in index["certificates"]:
        assert f'href="{row["paths"]["label"]}"' in html
    assert not list(populated.glob(".index.*.tmp"))


def test_revoke_is_idempotent_logged_and_in_signed_metadata(populated: Path) -> None:
    from greencert.trust import log as issuance_log
    from greencert.trust.metadata import load_state

    cid = "dc-a.chat.20260102T0000Z-20260103T0000Z"
    reg.revoke(populated, cid, "first reason", at=AT)
    reg.revoke(populated, cid, "second reason", at=AT.replace(month=4))
    entries = issuance_log.latest_entries(populated)[cid]
    assert entries["revoke"]["reason"] == "first reason"
    assert entries["revoke"]["revoked_at"] == "2026-03-01T00:00:00Z"
    state = load_state(populated)  # verifies every signature of the metadata chain
    status = state.target_files()[f"dc-a/chat/{cid}.json"].custom["greencert"]
    assert status["status"] == "revoked" and status["reason"] == "first reason"
    # 4 issuances + 1 revocation (the second revoke adds nothing)
    assert len(issuance_log.read_entries(populated)) == 5
    with pytest.raises(ConfigError, match="no certificate 'dc-a.chat.nope'"):
        reg.revoke(populated, "dc-a.chat.nope", "typo")
    with pytest.raises(ConfigError, match="control character"):
        reg.revoke(populated, cid, "bad\x1b[31m")
    with pytest.raises(ConfigError, match="needs a reason"):
        reg.revoke(populated, cid, "   ")


def test_safe_child_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    for parts in (("..", "etc"), ("../../etc", "x"), ("a/b",), ("",), ("ok", "..")):
        with pytest.raises(ConfigError):
            reg.safe_child(root, *parts)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "linked-site")
    with pytest.raises(ConfigError, match="escapes the registry"):
        reg.safe_child(root, "linked-site", "chat")
    assert reg.safe_child(root, "dc-a", "chat") == root.resolve() / "dc-a" / "chat"


def test_fsspec_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENCERT_HOME", str(tmp_path / "home"))
    """An fsspec URL (here fsspec's in-memory filesystem) works like a local folder."""
    from greencert.certificate.sign import load_signing_key

    root = reg.registry_root("memory://greencert-test-registry")
    assert not reg.is_local(root)
    cert = cert_doc("dc-a", "chat", 1)
    new_registry(root)
    put(root, cert)
    index = reg.rebuild_index(root, AT, signing_key=load_signing_key())
    assert json.loads(index.read_bytes())["certificates"][0]["certificate_id"] == cert["certificate_id"]
    assert (root / "index.html").exists()
    assert reg.list_certificates("memory://greencert-test-registry", AT)[0]["status"] == "valid"
    with pytest.raises(ConfigError):
        reg.safe_child(root, "..", "x")


def test_fleet_config_registry_url_is_kept(tmp_path: Path) -> None:
    from greencert.config import load_config

    config = tmp_path / "fleet.yaml"
    config.write_text(
        "registry: s3://bucket/greencert\nwork_dir: work\n"
        "deployments:\n  - deployment: chat-8b\n    source: {kind: simulated}\n"
    )
    assert str(load_config(config).registry_path) == "s3://bucket/greencert"
    config.write_text(config.read_text().replace("s3://bucket/greencert", "published"))
    assert load_config(config).registry_path == tmp_path / "published"

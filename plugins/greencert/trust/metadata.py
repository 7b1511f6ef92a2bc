"""The registry as a TUF repository: signed, versioned, expiring metadata over every certificate.

The Update Framework (python-tuf, ``tuf.api.metadata`` to write, ``tuf.ngclient.Updater`` to read)
gives the four top-level roles, each a file under ``<registry>/metadata/``:

``N.root.json``
    which keys may sign each role (the issuer key; a rotation is root N+1 signed by old and new key).
``N.targets.json``
    every certificate file with its length, SHA-256 and status (``custom.greencert``: issued or
    revoked, revocation time and reason, log index): revocation is part of the same signed metadata.
``N.snapshot.json``
    the version of targets that belongs with it (no mix-and-match of old and new targets).
``timestamp.json``
    the version of the snapshot, re-signed often with a short expiry: the freshness guarantee. A
    registry that stops being re-signed (a freeze) becomes "status unknown" within
    ``GREENCERT_STATUS_VALIDITY_HOURS`` (default 24).

Consistent snapshots are on: versioned files never change once written, so a reader that fetched a
timestamp always finds the snapshot and targets it names. The issuer writes targets, then
snapshot, then timestamp, under the registry lock.

Readers use python-tuf's client unchanged, with a fetcher for local folders and fsspec URLs
(https:// goes through python-tuf's own fetcher). The client is bootstrapped only from a root that a
key the *reader* trusts has signed (:mod:`greencert.trust.store`), never from a key found in the
registry, and it keeps its trusted metadata between runs (``$GREENCERT_HOME/tuf/``) so that a
registry put back to an older state is detected as a rollback.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError, PublishError
from greencert.files import is_local, registry_root, write_file

METADATA_DIR = "metadata"
CUSTOM_KEY = "greencert"
ROLES = ("root", "targets", "snapshot", "timestamp")
ENV_STATUS_HOURS = "GREENCERT_STATUS_VALIDITY_HOURS"
# Expiry of each role after it is signed. Timestamp is the freshness window; the others are
# re-signed with every publication and by `greencert registry refresh`.
ROOT_DAYS = 365
TARGETS_DAYS = 30
SNAPSHOT_DAYS = 7
KEEP_VERSIONS = 3  # older targets/snapshot files are pruned (readers mid-fetch still find theirs)


class StatusError(GreenCertError):
    """The registry's signed status could not be established; ``reason`` is the verify reason code."""

    def __init__(self, reason: str, problem: str, where: str | None = None) -> None:
        super().__init__(problem, where)
        self.reason = reason


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def status_validity() -> dt.timedelta:
    try:
        hours = float(os.environ.get(ENV_STATUS_HOURS, "24"))
    except ValueError:
        hours = 24.0
    return dt.timedelta(hours=max(hours, 1 / 60))


def tuf_key(public: Any) -> Any:
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public)


def _signer(key: Any) -> Any:
    from securesystemslib.signer import CryptoSigner

    return CryptoSigner(key.private, tuf_key(key.public))


def public_of(tuf_public: Any) -> Any:
    """A TUF Ed25519 key as a ``cryptography`` public key (to check certificate signatures with)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(tuf_public.keyval["public"]))


def _serialize(md: Any) -> bytes:
    from tuf.api.serialization.json import JSONSerializer

    return md.to_bytes(JSONSerializer(compact=True))


def _meta_dir(registry: Path) -> Path:
    return registry / METADATA_DIR


def _read(path: Path) -> bytes | None:
    if is_local(path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a symlinked metadata file is not read
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            return handle.read()
    from greencert.files import read_tagged

    return read_tagged(path)[0]  # one GET: no existence check that could be stale or raced


# --------------------------------------------------------------------------- issuer side


@dataclass
class RepositoryState:
    """The registry's current metadata, checked by the issuer before it writes the next version."""

    root: Any  # Metadata[Root]
    targets: Any | None  # Metadata[Targets]
    snapshot: Any | None
    timestamp: Any | None
    # Version tag (S3 ETag) of the timestamp.json that was read: the next one replaces exactly it.
    timestamp_tag: str | None = None

    def target_files(self) -> dict[str, Any]:
        return dict(self.targets.signed.targets) if self.targets is not None else {}


def _load_roots(registry: Path) -> list[Any]:
    """Every root version in order, each checked against its predecessor (the TUF root chain)."""
    from tuf.api.metadata import Metadata, Root

    roots: list[Any] = []
    version = 1
    while True:
        data = _read(_meta_dir(registry) / f"{version}.root.json")
        if data is None:
            return roots
        try:
            md = Metadata[Root].from_bytes(data)
            if md.signed.version != version:
                raise ValueError(f"file says version {md.signed.version}")
            trusted = roots[-1].signed if roots else md.signed
            trusted.verify_delegate(Root.type, md.signed_bytes, md.signatures)
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except Exception as exc:  # noqa: BLE001 - any defect of a root file is one refusal
            raise PublishError(
                f"root metadata version {version} does not verify ({exc})", str(_meta_dir(registry))
            ) from None
        roots.append(md)
        version += 1


def load_state(registry: Path) -> RepositoryState | None:
    """The registry's metadata as its issuer sees it; None for a registry without metadata.

    Every file is verified against the latest root; any defect refuses (PublishError): an issuer must
    not build the next version on metadata somebody else altered.
    """
    from tuf.api.metadata import Metadata, Snapshot, Targets, Timestamp

    from greencert.trust import log as issuance_log

    registry = registry_root(registry)
    roots = _load_roots(registry)
    if not roots:
        return None
    root = roots[-1]
    where = str(_meta_dir(registry))

    def load(cls: Any, name: str, role: str) -> Any:
        data = _read(_meta_dir(registry) / name)
        if data is None:
            raise PublishError(f"{name} is missing from the registry metadata", where)
        try:
            md = Metadata[cls].from_bytes(data)
            root.signed.verify_delegate(role, md.signed_bytes, md.signatures)
        except Exception as exc:  # noqa: BLE001
            raise PublishError(f"{name} does not verify ({exc})", where) from None
        return md

    from greencert.files import read_tagged

    timestamp_data, tag = (
        read_tagged(_meta_dir(registry) / "timestamp.json")
        if not is_local(registry)
        else (_read(_meta_dir(registry) / "timestamp.json"), None)
    )
    if timestamp_data is None and not issuance_log.read_entries(registry):
        # No timestamp yet and nothing ever logged: the registry's initialisation (root, then targets,
        # snapshot, timestamp, before any certificate) was interrupted; it is simply completed.
        return RepositoryState(root, None, None, None)
    if timestamp_data is None:
        from greencert.files import Conflict, conditional

        if conditional(registry):
            # Another publisher may be initialising this new object-store registry right now:
            # read again (update_trust retries; a timestamp that stays missing fails there).
            raise Conflict(f"{where}/timestamp.json")
        raise PublishError("timestamp.json is missing from the registry metadata", where)
    try:
        timestamp = Metadata[Timestamp].from_bytes(timestamp_data)
        root.signed.verify_delegate("timestamp", timestamp.signed_bytes, timestamp.signatures)
    except Exception as exc:  # noqa: BLE001
        raise PublishError(f"timestamp.json does not verify ({exc})", where) from None
    snapshot = load(Snapshot, f"{timestamp.signed.snapshot_meta.version}.snapshot.json", "snapshot")
    targets = load(Targets, f"{snapshot.signed.meta['targets.json'].version}.targets.json", "targets")
    return RepositoryState(root, targets, snapshot, timestamp, tag)


def authorized_key_ids(state: RepositoryState, role: str = "targets") -> set[str]:
    """GreenCert key ids (``signing.key_id``) of the keys the current root lets sign ``role``."""
    from greencert.certificate.sign import key_id

    root = state.root.signed
    return {key_id(public_of(root.get_key(k))) for k in root.roles[role].keyids}


def check_writable(registry: Path, key: Any, has_certificates: bool) -> RepositoryState | None:
    """Refuse to publish into a registry whose metadata is damaged, or that another key owns."""
    state = load_state(registry)
    if state is None:
        if has_certificates:
            raise PublishError(
                "the registry holds certificates but no trust metadata (deleted?); restore metadata/ "
                "from a backup, or adopt the registry explicitly with `greencert registry adopt`",
                str(registry_root(registry) / METADATA_DIR),
            )
        return None
    if key.key_id not in authorized_key_ids(state):
        raise PublishError(
            f"signing key {key.key_id} is not this registry's issuer key "
            f"({', '.join(sorted(authorized_key_ids(state)))}); rotate with `greencert registry rotate-key`",
            str(registry_root(registry) / METADATA_DIR),
        )
    return state


def _new_root(key: Any, moment: dt.datetime, version: int = 1) -> Any:
    from tuf.api.metadata import Metadata, Root

    root = Root(version=version, expires=moment + dt.timedelta(days=ROOT_DAYS), consistent_snapshot=True)
    public = tuf_key(key.public)
    for role in ROLES:
        root.add_key(public, role)
    return Metadata(root)


def target_file(path: str, data: bytes | None, status: dict[str, Any], like: Any = None) -> Any:
    """A targets entry for ``data`` (or with the length and hashes of ``like``) carrying ``status``."""
    from tuf.api.metadata import TargetFile

    if data is None:
        length, hashes = like.length, dict(like.hashes)
    else:
        length, hashes = len(data), {"sha256": hashlib.sha256(data).hexdigest()}
    return TargetFile(
        length=length, hashes=hashes, path=path, unrecognized_fields={"custom": {CUSTOM_KEY: status}}
    )


def write_metadata(
    registry: Path,
    key: Any,
    targets: dict[str, Any],
    moment: dt.datetime | None = None,
    state: RepositoryState | None = None,
) -> RepositoryState:
    """Sign and write the next targets, snapshot and timestamp (and root 1 for a new registry).

    ``targets`` maps target path -> TargetFile (see :func:`target_file`). The caller holds the
    registry lock and passes the state it checked (:func:`check_writable`).
    """
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp

    from greencert.files import put_if

    registry = registry_root(registry)
    moment = (moment or _now()).astimezone(dt.UTC).replace(microsecond=0)
    folder = _meta_dir(registry)
    signer = _signer(key)
    if state is None:
        root = _new_root(key, moment)
        root.sign(signer)
        # Create only: two publishers initialising one new object-store registry cannot both win.
        put_if(folder / "1.root.json", _serialize(root), None, create=True)
        current: tuple[int, int, int] = (0, 0, 0)
    else:
        root = state.root
        current = tuple(  # type: ignore[assignment]
            md.signed.version if md is not None else 0
            for md in (state.targets, state.snapshot, state.timestamp)
        )
    # Versioned files are created, never replaced: a writer that lost a race (or was killed) may
    # have left version N+1 unreferenced, so the next version is past every existing one.
    versions = (
        _next_version(folder, "targets", current[0]),
        _next_version(folder, "snapshot", current[1]),
        current[2] + 1,
    )
    t_md = Metadata(Targets(version=versions[0], expires=moment + dt.timedelta(days=TARGETS_DAYS)))
    t_md.signed.targets = dict(sorted(targets.items()))
    t_md.sign(signer)
    t_bytes = _serialize(t_md)
    s_md = Metadata(
        Snapshot(
            version=versions[1],
            expires=moment + dt.timedelta(days=SNAPSHOT_DAYS),
            meta={"targets.json": MetaFile(version=versions[0])},
        )
    )
    s_md.sign(signer)
    s_bytes = _serialize(s_md)
    ts_md = Metadata(
        Timestamp(
            version=versions[2],
            expires=moment + status_validity(),
            snapshot_meta=MetaFile(version=versions[1], length=len(s_bytes)),
        )
    )
    ts_md.sign(signer)
    put_if(folder / f"{versions[0]}.targets.json", t_bytes, None, create=True)
    put_if(folder / f"{versions[1]}.snapshot.json", s_bytes, None, create=True)
    # The commit point: on S3 replaced only if nobody else committed since `state` was read.
    tag = state.timestamp_tag if state is not None else None
    put_if(folder / "timestamp.json", _serialize(ts_md), tag, create=state is None or state.timestamp is None)
    _prune(folder, "targets", versions[0])
    _prune(folder, "snapshot", versions[1])
    return RepositoryState(root, t_md, s_md, ts_md)


def _next_version(folder: Path, role: str, current: int) -> int:
    highest = current
    try:
        names = [p.name for p in folder.glob(f"*.{role}.json")] if folder.exists() else []
    except OSError:
        names = []
    for name in names:
        head = name.split(".", 1)[0]
        if head.isdigit():
            highest = max(highest, int(head))
    return highest + 1


def _prune(folder: Path, role: str, current: int) -> None:
    for version in range(max(current - KEEP_VERSIONS - 20, 1), current - KEEP_VERSIONS + 1):
        path = folder / f"{version}.{role}.json"
        try:
            if path.exists():
                path.unlink()
        except OSError:
            pass


def rotate_root(
    registry: Path, old_key: Any, new_key: Any, moment: dt.datetime | None = None, compromised: bool = False
) -> int:
    """Root N+1 with ``new_key`` for every role, signed by the old and the new key (TUF rotation).

    A routine rotation keeps the old key in the targets role, so certificates it signed still
    verify; ``compromised`` drops it everywhere, so every certificate it signed stops verifying
    (``untrusted-issuer``) and must be re-issued. Readers that trust either key follow the root
    chain; the old key alone can never sign root N+2. Returns the new root version.
    """
    registry = registry_root(registry)
    state = load_state(registry)
    if state is None:
        raise PublishError("the registry has no trust metadata to rotate", str(registry))
    root_ids = authorized_key_ids(state, "root")
    if old_key.key_id not in root_ids:
        raise PublishError(f"key {old_key.key_id} is not a root key of this registry", str(registry))
    moment = (moment or _now()).astimezone(dt.UTC).replace(microsecond=0)
    new = _new_root(new_key, moment, state.root.signed.version + 1)
    if not compromised:
        new.signed.add_key(tuf_key(old_key.public), "targets")
    new.sign(_signer(old_key), append=True)
    new.sign(_signer(new_key), append=True)
    write_file(_meta_dir(registry) / f"{new.signed.version}.root.json", _serialize(new))
    # The issuance log continues under the new key: its current head (checked against the old key)
    # is signed again by the new one, so a compromised key's later heads are never accepted.
    from greencert.trust import log as issuance_log

    issuance_log.append(registry, new_key, [], moment, also=[old_key.public])
    # The other roles are re-signed at once under the new root (the old ones no longer verify).
    write_metadata(
        registry,
        new_key,
        state.target_files(),
        moment,
        RepositoryState(new, state.targets, state.snapshot, state.timestamp),
    )
    return int(new.signed.version)


# --------------------------------------------------------------------------- reader side


def _fetcher() -> Any:
    from tuf.api import exceptions
    from tuf.ngclient import FetcherInterface, Urllib3Fetcher

    class RegistryFetcher(FetcherInterface):
        """python-tuf's fetcher for https://; local folders and fsspec URLs read as files."""

        def __init__(self) -> None:
            self._http = Urllib3Fetcher(app_user_agent="greencert")

        def _fetch(self, url: str) -> Iterator[bytes]:
            if url.startswith(("http://", "https://")):
                return self._http._fetch(url)
            path = registry_root(url[len("file://") :] if url.startswith("file://") else url)
            try:
                data = _read(path)
            except OSError as exc:
                raise exceptions.DownloadError(f"cannot read {url} ({exc})") from None
            if data is None:
                raise exceptions.DownloadHTTPError(f"{url} not found", 404)
            return iter([data])

    return RegistryFetcher()


def location_url(registry: str | Path) -> str:
    text = str(registry)
    if text.startswith(("http://", "https://")) or "://" in text:
        return text.rstrip("/")
    return "file://" + str(Path(text).resolve())


@dataclass
class TrustedRegistry:
    """What python-tuf's client established about a registry, from a root the reader trusts."""

    location: str
    anchor: Any  # the TrustAnchor whose key signed the bootstrap root
    root_version: int
    timestamp_version: int
    status_expires: dt.datetime
    issuer_keys: dict[str, Any]  # GreenCert key id -> public key (targets role of the latest root)
    targets: dict[str, Any] = field(default_factory=dict)  # path -> TargetFile

    def status_of(self, path: str) -> dict[str, Any] | None:
        target = self.targets.get(path)
        if target is None:
            return None
        return dict((target.custom or {}).get(CUSTOM_KEY) or {})


def _fetch_bytes(fetcher: Any, url: str) -> bytes | None:
    from tuf.api import exceptions

    try:
        return b"".join(fetcher.fetch(url))
    except exceptions.DownloadHTTPError as exc:
        if exc.status_code in (403, 404):
            return None
        raise


def _bootstrap_root(fetcher: Any, base: str, anchors: list[Any]) -> tuple[bytes, Any]:
    """The newest root whose root role a trusted anchor holds and that verifies under itself."""
    from tuf.api.metadata import Metadata, Root

    from greencert.certificate.sign import key_id

    wanted = {a.key_id: a for a in anchors}
    chosen: tuple[bytes, Any] | None = None
    version = 1
    seen_any = False
    while version < 10_000:
        data = _fetch_bytes(fetcher, f"{base}/{version}.root.json")
        if data is None:
            break
        seen_any = True
        try:
            md = Metadata[Root].from_bytes(data)
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except Exception:  # noqa: BLE001 - an invalid root is no bootstrap; the client reports it
            version += 1
            continue
        for tuf_id in md.signed.roles[Root.type].keyids:
            kid = key_id(public_of(md.signed.get_key(tuf_id)))
            if kid in wanted:
                chosen = (data, wanted[kid])
        version += 1
    if not seen_any:
        raise StatusError("status-unknown", "the registry has no trust metadata (metadata/1.root.json)", base)
    if chosen is None:
        raise StatusError(
            "untrusted-issuer",
            "no root of the registry's metadata is signed by a key you trust "
            f"({', '.join(sorted(wanted)) or 'trust store empty'}); pin the issuer with --key or "
            "`greencert trust add`",
            base,
        )
    return chosen


def cache_dir_for(location: str) -> Path:
    from greencert.certificate.sign import greencert_home

    digest = hashlib.sha256(location.encode()).hexdigest()[:24]
    return greencert_home() / "tuf" / digest


def open_trusted(
    registry: str | Path, anchors: list[Any], cache: Path | None | bool = True
) -> TrustedRegistry:
    """Run python-tuf's client over the registry's metadata; raise StatusError with a reason code.

    ``cache=True`` keeps the client's trusted metadata under ``$GREENCERT_HOME/tuf/`` (rollback
    protection across runs); ``False`` uses a throw-away folder (listings that must not move it).
    """
    from tuf.api import exceptions
    from tuf.api.metadata import Metadata, Targets
    from tuf.ngclient import Updater

    location = location_url(registry)
    base = f"{location}/{METADATA_DIR}"
    fetcher = _fetcher()
    try:
        bootstrap, anchor = _bootstrap_root(fetcher, base, anchors)
    except exceptions.DownloadError as exc:
        raise StatusError("status-unknown", f"registry metadata cannot be fetched ({exc})", base) from None
    with tempfile.TemporaryDirectory(prefix="greencert-tuf-") as scratch:
        if cache is True:
            folder = cache_dir_for(location)
        elif cache:
            folder = Path(cache)
        else:
            folder = Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            updater = Updater(str(folder), base + "/", fetcher=fetcher, bootstrap=bootstrap)
            updater.refresh()
        except exceptions.ExpiredMetadataError as exc:
            raise StatusError(
                "status-unknown",
                f"the registry's signed status has expired ({exc}): it is no longer re-signed (frozen?), "
                "so revocations since then would not show",
                base,
            ) from None
        except exceptions.BadVersionNumberError as exc:
            raise StatusError(
                "rollback",
                f"registry metadata is older than metadata this machine verified before ({exc}): "
                "the registry was rolled back",
                base,
            ) from None
        except exceptions.RepositoryError as exc:
            raise StatusError("bad-metadata", f"registry metadata does not verify ({exc})", base) from None
        except exceptions.DownloadError as exc:
            raise StatusError(
                "status-unknown", f"registry metadata is incomplete ({exc}): files deleted?", base
            ) from None
        from tuf.api.metadata import Root, Timestamp

        root = Metadata[Root].from_bytes((folder / "root.json").read_bytes()).signed
        targets = Metadata[Targets].from_bytes((folder / "targets.json").read_bytes()).signed
        timestamp = Metadata[Timestamp].from_bytes((folder / "timestamp.json").read_bytes()).signed
    from greencert.certificate.sign import key_id

    keys = {}
    for tuf_id in root.roles["targets"].keyids:
        public = public_of(root.get_key(tuf_id))
        keys[key_id(public)] = public
    return TrustedRegistry(
        location,
        anchor,
        int(root.version),
        int(timestamp.version),
        timestamp.expires,
        keys,
        dict(targets.targets),
    )

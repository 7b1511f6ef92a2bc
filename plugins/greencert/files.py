"""Registry paths: local folders or any fsspec URL, whole-file atomic writes and conditional writes.

A leaf module (nothing of greencert but the atomic writer): the registry, its trust metadata and
its issuance log all write through it.

Two kinds of atomic primitive, one per kind of store (docs/registry.md):

* local folders: ``rename`` of a complete temporary (a reader sees the old file or the new one)
  and ``flock`` on the registry's lock file (one writer of registry-wide files at a time);
* object stores (``s3://`` through s3fs): whole-object PUTs, and *conditional* PUTs --
  ``If-None-Match: *`` (create only) and ``If-Match: <etag>`` (replace only what was read) -- so
  that publishers on different machines update registry-wide files by compare-and-swap, retried
  when the store answers 412 Precondition Failed. Stores without conditional writes (``memory://``,
  plain fsspec folders) fall back to unconditional PUTs: one publisher at a time there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

from greencert.atomic import atomic_write_bytes

WORK_PREFIX = "greencert-"
_OWNER = ".owner.lock"


def registry_root(target: str | Path) -> Path:
    """The registry as a path object: a local ``Path``, or a ``UPath`` for any fsspec URL.

    ``s3://bucket/registry``, ``gs://...``, ``memory://...``, ``file://...`` and
    Airflow's ``ObjectStoragePath`` (a UPath) all work; a plain path stays local.
    """
    if hasattr(target, "protocol") and hasattr(target, "fs"):
        return target  # type: ignore[return-value]  # UPath / ObjectStoragePath
    text = str(target)
    if "://" in text:
        from upath import UPath

        if text.startswith(("s3://", "s3a://")):
            # No cached directory listings: other publishers change the registry all the time, and a
            # stale listing would hide their files (fsspec caches listings by default).
            return UPath(text, use_listings_cache=False)
        return UPath(text)
    return Path(text)


def is_local(root: Path) -> bool:
    """Local folders get rename-based atomic writes; object stores write whole objects at once."""
    return not hasattr(root, "protocol")


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` atomically: temp file + rename locally, a single whole-object PUT on object stores."""
    if is_local(path):
        atomic_write_bytes(path, data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# --------------------------------------------------------------------------- conditional writes


class Conflict(Exception):
    """A conditional write lost: another writer created or replaced the object first (HTTP 412)."""


def _s3(path: Path) -> tuple[Any, str, str] | None:
    """(s3fs filesystem, bucket, key) when ``path`` is on S3 (the store with conditional PUTs)."""
    fs = getattr(path, "fs", None)
    if fs is None or "s3" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        return None
    bucket, key, _ = fs.split_path(path.path)
    return fs, bucket, key


def conditional(path: Path) -> bool:
    """True where :func:`put_if` is a real compare-and-swap across machines (S3)."""
    return _s3(path) is not None


def _precondition_failed(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):
        return True
    cause = exc.__cause__
    response = getattr(cause, "response", None) or {}
    return (response.get("Error") or {}).get("Code") in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
        "412",
    )


def read_whole(path: Path) -> bytes:
    """The whole file in one read: on a remote store one GET, never a size query followed by ranged
    reads (fsspec's default file object), which could splice two versions of a file being replaced."""
    if is_local(path):
        return path.read_bytes()
    data: bytes = path.fs.cat_file(path.path if _s3(path) else str(path))
    return data


def read_tagged(path: Path) -> tuple[bytes | None, str | None]:
    """The object's bytes and its version tag (S3 ETag; None elsewhere); (None, None) when absent.

    One GET on S3, so the tag belongs to exactly the bytes returned.
    """
    s3 = _s3(path)
    if s3 is None:
        try:
            return read_whole(path), None
        except FileNotFoundError:
            return None, None
    fs, bucket, key = s3
    from fsspec.asyn import sync

    async def get() -> tuple[bytes, str | None]:
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with response["Body"] as stream:
            return await stream.read(), response.get("ETag")

    try:
        return sync(fs.loop, get)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None, None


def durable_temporary(path: Path, data: bytes) -> Path:
    """Write ``data`` to a hidden temporary beside local ``path`` (``.<name>.<random>.tmp``), flushed
    to disk, and return it: the caller links or renames it into place (or removes it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def put_if(path: Path, data: bytes, tag: str | None, *, create: bool = False) -> None:
    """Write ``data`` only if the object is unchanged since it was read with ``tag`` (S3 If-Match), or,
    with ``create``, only if it does not exist yet (If-None-Match: *). Raise :class:`Conflict` otherwise.

    Locally the caller holds the registry lock: the write is an atomic replace (``create``: a hard
    link of the complete temporary, which fails if the name exists). Other fsspec stores write
    unconditionally.
    """
    s3 = _s3(path)
    if s3 is not None:
        fs, bucket, key = s3
        condition = {"IfNoneMatch": "*"} if create else {"IfMatch": tag} if tag else {}
        try:
            fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as exc:
            if _precondition_failed(exc):
                raise Conflict(str(path)) from None
            raise
        return
    if is_local(path) and create:
        tmp = durable_temporary(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise Conflict(str(path)) from None
        finally:
            os.unlink(tmp)
        return
    if not is_local(path) and create and path.exists():
        raise Conflict(str(path))
    write_file(path, data)


def remove_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- locks and work folders


@contextlib.contextmanager
def shared_lock(lock_file: Path) -> Generator[bool, None, None]:
    """Hold ``lock_file`` shared (readers) while writers hold it exclusive; yields False when the file
    cannot be opened (no registry lock yet, a read-only copy, an object store): then no lock is held."""
    if not is_local(lock_file):
        yield False
        return
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        yield False
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield True
    finally:
        os.close(fd)


def _dead(lock_file: Path) -> bool:
    """True when nobody holds ``lock_file`` (its owner exited or was killed: flock dies with it)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def sweep_work_directories(parent: Path | None = None) -> int:
    """Remove ``$TMPDIR/greencert-*`` work folders whose owner is gone (killed runs); return how many.

    Only folders made by :func:`work_directory` are touched: each holds an owner lock for as long
    as its process lives, so a folder whose lock can be taken belongs to nobody.
    """
    parent = Path(parent or tempfile.gettempdir())
    removed = 0
    try:
        candidates = [*parent.glob(f"{WORK_PREFIX}*"), *parent.glob(f".{WORK_PREFIX}claim-*")]
    except OSError:
        return 0
    for folder in candidates:
        owner = folder / _OWNER
        if folder.is_dir() and not folder.is_symlink() and _dead(owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


@contextlib.contextmanager
def work_directory(kind: str = "") -> Generator[Path, None, None]:
    """A private work folder ``$TMPDIR/greencert-<kind>-*`` (removed on exit), like
    ``tempfile.TemporaryDirectory``, but a killed run's folder is removed by the next run: the folder
    holds an owner lock while its process lives, and every new one sweeps those whose owner is gone.
    """
    sweep_work_directories()
    # Made under a hidden name and renamed once its owner lock is held: a sweeper never sees a
    # folder whose lock is not taken yet.
    claim = Path(tempfile.mkdtemp(prefix=f".{WORK_PREFIX}claim-"))
    fd = os.open(claim / _OWNER, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    folder = claim.with_name(f"{WORK_PREFIX}{kind + '-' if kind else ''}{claim.name.rsplit('-', 1)[-1]}")
    try:
        try:
            claim.rename(folder)
        except FileNotFoundError:  # swept in the instant before its lock was taken: make another
            folder.mkdir(mode=0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(claim, ignore_errors=True)
        os.close(fd)

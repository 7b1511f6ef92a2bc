"""Registry paths: local folders or any fsspec URL, and whole-file atomic writes on either.

A leaf module (nothing of greencert but the atomic writer): the registry, its trust metadata and
its issuance log all write through it.
"""

from __future__ import annotations

from pathlib import Path

from greencert.certificate.publish import atomic_write_bytes


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

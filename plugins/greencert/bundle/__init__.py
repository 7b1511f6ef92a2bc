"""The evidence bundle: the folder every certificate is computed from (format v1)."""

from greencert.bundle.manifest import Manifest, load_manifest
from greencert.bundle.reader import Bundle, Series, open_bundle

__all__ = ["Bundle", "Manifest", "Series", "load_manifest", "open_bundle"]

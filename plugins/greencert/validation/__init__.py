"""Validation of evidence bundles with Great Expectations suites from ``expectations/``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from greencert.validation.run import ValidationReport, validate_bundle

__all__ = ["ValidationReport", "validate_bundle"]


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): the validation child imports greencert.validation.batch without the
    # bundle readers, pint and the manifest models that greencert.validation.run brings.
    if name in __all__:
        from greencert.validation import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

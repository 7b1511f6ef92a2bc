"""Validation of evidence bundles with Great Expectations suites from ``expectations/``."""

from greencert.validation.run import ValidationReport, validate_bundle

__all__ = ["ValidationReport", "validate_bundle"]

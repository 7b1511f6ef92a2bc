"""Errors that name the problem and where it is.

Every error raised for bad input carries a ``where`` (file, column, row or
time) so that an operator can find the offending data without a debugger.
"""

from __future__ import annotations


class GreenCertError(Exception):
    """Base class: a problem GreenCert detected and can explain."""

    exit_code = 2

    def __init__(self, problem: str, where: str | None = None) -> None:
        self.problem = problem
        self.where = where
        super().__init__(f"{where}: {problem}" if where else problem)


class BundleError(GreenCertError):
    """The evidence bundle is malformed (missing file, bad unit, bad CSV...)."""


class ValidationFailed(GreenCertError):
    """A critical Great Expectations expectation failed on the bundle."""

    exit_code = 3

    def __init__(self, problem: str, where: str | None = None, report_path: str | None = None) -> None:
        super().__init__(problem, where)
        self.report_path = report_path


class ConfigError(GreenCertError):
    """The fleet configuration or a grading scheme is malformed."""


class SourceError(GreenCertError):
    """A telemetry or grid source could not deliver complete data."""

    exit_code = 4


class PublishError(GreenCertError):
    """The registry could not be written (disk full, permissions...); what was there is kept."""

    exit_code = 5


class VerificationFailed(GreenCertError):
    """A certificate did not verify; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, problem: str, where: str | None = None, exit_code: int = 10) -> None:
        super().__init__(problem, where)
        self.reason = reason
        self.exit_code = exit_code

"""Names that become file names: site, deployment and meter identifiers.

A leaf module (no greencert imports), so that the bundle, the fleet config and
the registry code all apply the same rule.

- Whole-string match (``re.fullmatch``): ``"dc-1\\n"`` is not ``"dc-1"``.
- 1-64 of ``A-Z a-z 0-9 . _ -``, starting with a letter or a digit, no ``..``.
- A site name has no ``.``: a certificate id is ``<site>.<deployment>.<period>``, and
  with dots in both a site ``a.b`` + deployment ``c`` would give the same id as
  site ``a`` + deployment ``b.c``. Without dots in the site, the id splits at its
  first dot (site) and its last dot (the period, which has none) in one way only.
- Names of registry files and folders are refused (case-insensitively, for
  case-insensitive file systems): a site called ``keys`` or ``index.json`` would
  collide with the registry's own files.
"""

from __future__ import annotations

import re

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SITE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# Files and folders at the top of a registry (and of a site folder). Kept in one place so the
# registry code and the identifier check cannot drift apart.
RESERVED_NAMES = frozenset(
    {
        "index.json",
        "index.html",
        "issuer.pem",
        "keys",
        "revocations.json",
        "revocations.json.sig",
        "metadata",
        "log",
        "trust",
    }
)

IDENTIFIER_RULE = "1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit, no '..'"
SITE_RULE = (
    "1-64 of A-Z a-z 0-9 _ -, starting with a letter or digit (no '.': it separates the certificate id)"
)


def is_reserved(name: str) -> bool:
    """A registry file or folder name, or a hidden name (starting with '.')."""
    return name.startswith(".") or name.lower() in RESERVED_NAMES


def check_identifier(value: str, what: str, registry_name: bool = True) -> str:
    """Deployment names (and any name that becomes a file name); raise ValueError if unsafe.

    ``registry_name=False`` for names that never become a registry folder (meter names).
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a safe identifier ({IDENTIFIER_RULE})")
    if registry_name and is_reserved(value):
        raise ValueError(f"{what} {value!r} is the name of a registry file or folder (reserved)")
    return value


def check_site(value: str, what: str = "scope.site") -> str:
    """Site names: identifiers without '.', so certificate ids are unambiguous."""
    check_identifier(value, what)
    if not _SITE_RE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a safe site name ({SITE_RULE})")
    return value

"""The one Jinja environment of the package's HTML templates (certificate, label, registry index).

Built once per process: a fresh ``Environment`` per call compiles its template
again every time, which cost about half a second per published certificate
(label and index), more than signing, reports and evidence together.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.Lock()
_TEMPLATES: dict[str, Any] = {}


@functools.cache
def template_environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("greencert", "templates"), autoescape=select_autoescape(["html", "j2"])
    )


def template(name: str) -> Any:
    """The compiled template ``name``, compiled once per process even when publishing threads
    ask for it at the same moment (each compiled its own copy, ~0.2 s each)."""
    found = _TEMPLATES.get(name)
    if found is None:
        with _LOCK:
            found = _TEMPLATES.get(name)
            if found is None:
                found = _TEMPLATES[name] = template_environment().get_template(name)
    return found

"""The one Jinja environment of the package's HTML templates (certificate, label, registry index).

Built once per process: a fresh ``Environment`` per call compiles its template
again every time, which cost about half a second per published certificate
(label and index), more than signing, reports and evidence together.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def template_environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("greencert", "templates"), autoescape=select_autoescape(["html", "j2"])
    )

"""Human-readable HTML for a certificate (autoescaped: labels may contain markup)."""

from __future__ import annotations

from typing import Any

GRADE_COLOURS = {
    "A": "#00843d",
    "B": "#4bae32",
    "C": "#b6d300",
    "D": "#ffed00",
    "E": "#fbb900",
    "F": "#ec6608",
    "G": "#e30613",
}


def render_html(certificate: dict[str, Any]) -> str:
    from greencert.certificate.templates import template

    return template("certificate.html.j2").render(
        c=certificate, colour=GRADE_COLOURS.get(certificate["grade"], "#555")
    )

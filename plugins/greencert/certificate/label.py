"""The human label: one printable page per certificate (HTML), and the same page as PDF.

The HTML is self-contained (inline CSS and SVG, no script, no network) and
autoescaped: every text taken from telemetry or configuration (model names,
sites, labels) is shown as text, never interpreted as markup. The PDF is
printed from that HTML by headless Chromium, so both always show the same thing.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError

log = logging.getLogger("greencert")

ENV_CHROMIUM = "GREENCERT_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Headless printing without touching the network, the GPU or a shared profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--no-pdf-header-footer",
)

CHART_W, CHART_H = 660, 165
PAD_L, PAD_R, PAD_T, PAD_B = 46, 52, 12, 30


class LabelError(GreenCertError):
    """The label could not be rendered (PDF printer missing or failed)."""


def _nice_ceiling(value: float) -> float:
    """Smallest 1/2/2.5/5 x 10^k not below ``value`` (axis maxima people can read)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exp >= value * (1 - 1e-12):
            return step * 10**exp
    return 10 ** (exp + 1)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


@dataclass
class Chart:
    """Geometry of the hourly chart: bars = facility energy per hour, line = output tokens per hour."""

    width: int
    height: int
    bars: list[dict[str, float]]
    line: str
    left_ticks: list[dict[str, Any]]
    right_ticks: list[dict[str, Any]]
    x_ticks: list[dict[str, Any]]
    plot: dict[str, float]
    empty: bool


def build_chart(hourly: dict[str, list[float]]) -> Chart:
    starts = list(hourly.get("hour_start", []))
    energy = [float(v) for v in hourly.get("facility_energy_kwh", [])]
    tokens = [float(v) / 1e6 for v in hourly.get("output_tokens", [])]
    n = len(starts)
    plot = {"x": PAD_L, "y": PAD_T, "w": CHART_W - PAD_L - PAD_R, "h": CHART_H - PAD_T - PAD_B}
    if n == 0:
        return Chart(CHART_W, CHART_H, [], "", [], [], [], plot, True)
    e_max = _nice_ceiling(max(energy))
    t_max = _nice_ceiling(max(tokens))
    slot = plot["w"] / n
    base = plot["y"] + plot["h"]
    bars = []
    points = []
    for i in range(n):
        h = plot["h"] * energy[i] / e_max
        bars.append({"x": plot["x"] + i * slot + slot * 0.12, "y": base - h, "w": slot * 0.76, "h": h})
        points.append(f"{plot['x'] + (i + 0.5) * slot:.1f},{base - plot['h'] * tokens[i] / t_max:.1f}")
    ticks = 4
    left = [{"y": base - plot["h"] * k / ticks, "label": _fmt(e_max * k / ticks)} for k in range(ticks + 1)]
    right = [{"y": base - plot["h"] * k / ticks, "label": _fmt(t_max * k / ticks)} for k in range(ticks + 1)]
    every = max(1, math.ceil(n / 12))
    x_ticks = [
        {
            "x": plot["x"] + (i + 0.5) * slot,
            "label": dt.datetime.fromtimestamp(starts[i], dt.UTC).strftime("%H:%M")
            if n <= 48
            else dt.datetime.fromtimestamp(starts[i], dt.UTC).strftime("%m-%d %H"),
        }
        for i in range(0, n, every)
    ]
    return Chart(CHART_W, CHART_H, bars, " ".join(points), left, right, x_ticks, plot, False)


def band_rows(certificate: dict[str, Any]) -> list[dict[str, Any]]:
    """A..G rows with their kWh/Mtok and gCO2e/Mtok ranges for the certificate's size class."""
    from greencert.certificate.render import GRADE_COLOURS

    grading = certificate["grading"]
    grades = list(GRADE_COLOURS)
    e_edges = grading["energy_band_edges"]["upper_edges"]
    c_edges = grading["carbon_band_edges"]["upper_edges"]
    rows = []
    for i, g in enumerate(grades):
        if i == 0:
            e_range, c_range = f"≤ {e_edges[0]:g}", f"≤ {c_edges[0]:g}"
        elif i < len(e_edges):
            e_range, c_range = f"{e_edges[i - 1]:g}–{e_edges[i]:g}", f"{c_edges[i - 1]:g}–{c_edges[i]:g}"
        else:
            e_range, c_range = f"> {e_edges[-1]:g}", f"> {c_edges[-1]:g}"
        rows.append(
            {
                "grade": g,
                "colour": GRADE_COLOURS[g],
                "width": 56 + 7 * i,  # percent of the track: the classic energy-label staircase
                "energy_range": e_range,
                "carbon_range": c_range,
                "dark_text": g in ("C", "D", "E"),  # white on yellow is unreadable
                "achieved": g == certificate["grade"],
                "energy": g == grading["energy"],
                "carbon": g == grading["carbon"],
            }
        )
    return rows


def verify_commands(certificate: dict[str, Any]) -> dict[str, str]:
    name = f"{certificate['certificate_id']}.json"
    return {
        "greencert": f"greencert verify {name}",
        "openssl": (
            f"openssl pkeyutl -verify -pubin -inkey {certificate['certificate_id']}.issuer.pem "
            f"-rawin -in {name} -sigfile {name}.sig"
        ),
        "key_id": "openssl pkey -pubin -in ISSUER.pem -outform DER | sha256sum | cut -c1-32",
    }


def render_label(certificate: dict[str, Any]) -> str:
    """The label HTML (autoescaped, self-contained, one A4 page when printed)."""
    from greencert.certificate.templates import template

    hourly = certificate.get("hourly", {})
    hours = len(hourly.get("hour_start", []))
    return template("label.html.j2").render(
        c=certificate,
        bands=band_rows(certificate),
        chart=build_chart(hourly),
        hours=hours,
        verify=verify_commands(certificate),
    )


def find_chromium() -> str | None:
    explicit = os.environ.get(ENV_CHROMIUM)
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


# Chromium stamps the print time into the PDF; fixing it (same length, so the
# cross-reference offsets stay valid) makes the PDF a function of the certificate.
_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{14})([^)]*)\)")


def _pin_pdf_dates(pdf: bytes, moment: dt.datetime) -> bytes:
    fixed = moment.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S").encode()

    def repl(match: re.Match[bytes]) -> bytes:
        tail = match.group(3)
        zone = b"+00'00'"
        tail = zone + b" " * (len(tail) - len(zone)) if len(tail) >= len(zone) else tail
        return b"/" + match.group(1) + b" (D:" + fixed + tail + b")"

    return _PDF_DATE.sub(repl, pdf)


def render_pdf(html: str, issued_at: dt.datetime | None = None, timeout: float = 120.0) -> bytes:
    """Print the label HTML to PDF with headless Chromium; raise LabelError if it cannot."""
    chromium = find_chromium()
    if chromium is None:
        raise LabelError(f"no Chromium found for the PDF label (install chromium or set {ENV_CHROMIUM})")
    with tempfile.TemporaryDirectory(prefix="greencert-label-") as tmp:
        page = Path(tmp) / "label.html"
        page.write_text(html, encoding="utf-8")
        out = Path(tmp) / "label.pdf"
        cmd = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={Path(tmp) / 'profile'}",
            f"--print-to-pdf={out}",
            page.as_uri(),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabelError(
                f"Chromium failed to print the label ({type(exc).__name__}: {exc})", chromium
            ) from None
        if not out.is_file() or out.stat().st_size == 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise LabelError(f"Chromium exited {proc.returncode} without a PDF: {' | '.join(tail)}", chromium)
        data = out.read_bytes()
    return _pin_pdf_dates(data, issued_at) if issued_at else data

"""The human label: one printable page per certificate (HTML), and the same page as PDF.

The HTML is self-contained (inline CSS and SVG, no script, no network) and
autoescaped: every text taken from telemetry or configuration (model names,
sites, labels) is shown as text, never interpreted as markup. The PDF is
printed from that HTML by headless Chromium, so both always show the same thing.
"""

from __future__ import annotations

import datetime as dt
import io
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

CHART_W, CHART_H = 660, 116
PAD_L, PAD_R, PAD_T, PAD_B = 46, 52, 10, 18


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
    plot: dict[str, float] = {
        "x": PAD_L,
        "y": PAD_T,
        "w": CHART_W - PAD_L - PAD_R,
        "h": CHART_H - PAD_T - PAD_B,
    }
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


GRADES = ("A", "B", "C", "D", "E", "F", "G")


def split_grades(certificate: dict[str, Any]) -> dict[str, Any] | None:
    """The efficiency and confirmed letters when the certificate states them apart (scheme 2026.3+), else None.

    ``grading.efficiency`` and ``grading.confirmed`` are ``{overall, energy, carbon[, level]}``; older
    certificates have one letter per figure (confirmed at 95 % where the scheme said so).
    """
    grading = certificate.get("grading") or {}
    eff, conf = grading.get("efficiency"), grading.get("confirmed")
    if not (isinstance(eff, dict) and isinstance(conf, dict)):
        return None
    limited = grading.get("limited_by") or (
        "measurement" if conf.get("overall") != eff.get("overall") else "efficiency"
    )
    return {
        "efficiency": eff,
        "confirmed": conf,
        "level": float(conf.get("level") or 0.95),
        "limited_by": limited,
    }


def _awarded(certificate: dict[str, Any], what: str) -> str:
    """The letter a figure holds at 95 % confidence (the outlined band of the scale)."""
    split = split_grades(certificate)
    if split:
        return str(split["confirmed"][what])
    return str(certificate["grading"][what])


def _point(certificate: dict[str, Any], what: str) -> str:
    """The band of a figure's certified value (the dot of the scale)."""
    split = split_grades(certificate)
    if split:
        return str(split["efficiency"][what])
    grading = certificate["grading"]
    return str(((grading.get("confidence") or {}).get("point_grades") or {}).get(what) or grading[what])


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
                "energy_range": e_range,
                "carbon_range": c_range,
                "dark_text": g in ("C", "D", "E"),  # white on yellow is unreadable
                "achieved": g == certificate["grade"],
                "energy": g == grading["energy"],
                "carbon": g == grading["carbon"],
            }
        )
    return rows


# --- the scale: A..G as equal-width bands, the figure and its 95 % interval drawn on it -------


def scale_position(value: float, edges: list[float]) -> float:
    """Where ``value`` sits on an A..G scale of equal-width bands, in band units (0 = left of A, 7 = right of G).

    Inside a band the position is logarithmic between its edges (the bands roughly double), so
    a figure halfway in ratio between two edges sits halfway across the band. Band A runs from
    half its upper edge, band G to twice F's upper edge; beyond those the mark stays at the end.
    """
    n = len(edges) + 1
    lows = [edges[0] / 2, *edges]
    highs = [*edges, edges[-1] * 2]
    if not math.isfinite(value) or value <= lows[0]:
        return 0.0
    for i in range(n):
        if value <= highs[i]:
            return i + math.log(value / lows[i]) / math.log(highs[i] / lows[i])
    return float(n)


def build_scale(certificate: dict[str, Any]) -> dict[str, Any]:
    """The A..G scale with one row per graded figure: point value, 95 % interval, awarded grade.

    Positions are percentages of the scale's width, so the same HTML draws it on a phone and
    on paper (no fixed-size picture to shrink).
    """
    from greencert.certificate.render import GRADE_COLOURS

    grading = certificate["grading"]
    metrics = certificate["metrics"]
    grades = list(GRADE_COLOURS)
    n = len(grades)
    rows = []
    for what, key, edges_key, unit in (
        ("energy", "energy_per_million_tokens", "energy_band_edges", "kWh"),
        ("carbon", "carbon_per_million_tokens", "carbon_band_edges", "g CO2e"),
    ):
        m = metrics[key]
        edges = [float(e) for e in grading[edges_key]["upper_edges"]]
        interval = m.get("interval95")

        def pct(v: float, edges: list[float] = edges) -> float:
            return round(100.0 * scale_position(float(v), edges) / n, 3)

        value = float(m["value"])
        row: dict[str, Any] = {
            "what": what,
            "unit": unit,
            "value": value,
            "point_grade": _point(certificate, what),
            "grade": _awarded(certificate, what),
            "x": pct(value),
            "edges": [{"x": round(100.0 * (i + 1) / n, 3), "label": f"{e:g}"} for i, e in enumerate(edges)],
            "low": None,
            "high": None,
        }
        if interval:
            row.update(
                low=float(interval[0]),
                high=float(interval[1]),
                x_low=pct(interval[0]),
                x_high=pct(interval[1]),
            )
        rows.append(row)
    bands = [{"grade": g, "colour": GRADE_COLOURS[g], "dark_text": g in ("C", "D", "E")} for g in grades]
    # "awarded" (one letter per figure) or "confirmed" (2026.3+: the letter is the efficiency grade).
    return {
        "bands": bands,
        "rows": rows,
        "awarded_word": "confirmed" if split_grades(certificate) else "awarded",
    }


# --- plain language ------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 3) -> str:
    """A figure as people read it: 3 significant digits, thousands separated, no exponent."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def human_date(stamp: str, with_time: bool | None = None) -> str:
    """``2026-12-01T00:00:00Z`` -> ``1 December 2026`` (``, 06:00 UTC`` when not midnight)."""
    moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(dt.UTC)
    day = f"{moment.day} {moment:%B %Y}"
    if with_time or (with_time is None and moment.time() != dt.time(0)):
        return f"{day}, {moment:%H:%M} UTC"
    return day


def human_period(period: dict[str, str]) -> str:
    """The certified period in words: one UTC day, or from .. to (end exclusive)."""
    start = dt.datetime.fromisoformat(period["start"].replace("Z", "+00:00")).astimezone(dt.UTC)
    end = dt.datetime.fromisoformat(period["end"].replace("Z", "+00:00")).astimezone(dt.UTC)
    hours = (end - start).total_seconds() / 3600
    if start.time() == dt.time(0) and end - start == dt.timedelta(days=1):
        return f"{start:%A} {start.day} {start:%B %Y} (24 hours, UTC)"
    if start.time() == dt.time(0) and end.time() == dt.time(0):
        last = end - dt.timedelta(days=1)
        return f"{start.day} {start:%B %Y} to {last.day} {last:%B %Y} ({(end - start).days} days, UTC)"
    return f"{human_date(period['start'], True)} to {human_date(period['end'], True)} ({hours:g} hours)"


def size_class_words(name: str | None) -> str | None:
    """``<=20B`` -> ``up to 20 B``, ``>66B`` -> ``more than 66 B`` (the scheme's class names in words)."""
    if not name:
        return None
    match = re.fullmatch(r"\s*(<=|<|>=|>)?\s*([0-9.]+)\s*B\s*", str(name))
    if not match:
        return str(name)
    words = {"<=": "up to", "<": "under", ">=": "at least", ">": "more than", None: ""}[match.group(1)]
    return f"{words} {match.group(2)} B".strip()


def _band_limits(certificate: dict[str, Any], grade: str) -> tuple[float, float] | None:
    """The upper energy and carbon edges of ``grade`` (None for the last band, which has none)."""
    grading = certificate["grading"]
    e_edges = grading["energy_band_edges"]["upper_edges"]
    c_edges = grading["carbon_band_edges"]["upper_edges"]
    i = GRADES.index(grade) if grade in GRADES else len(GRADES) - 1
    if i < len(e_edges):
        return float(e_edges[i]), float(c_edges[i])
    return None


def grade_meaning(certificate: dict[str, Any]) -> str:
    """One sentence: what the headline letter says about this deployment, with the limits of its band.

    Up to scheme 2026.2 the letter is awarded at 95 % confidence; from 2026.3 it is the efficiency
    grade (the band of the certified figures), and :func:`confirmed_meaning` states the 95 % one.
    """
    grading = certificate["grading"]
    grade = certificate["grade"]
    e_edges = grading["energy_band_edges"]["upper_edges"]
    c_edges = grading["carbon_band_edges"]["upper_edges"]
    split = split_grades(certificate)
    confident = bool(grading.get("confidence")) and not split
    size = size_class_words(grading.get("size_class"))
    size_text = f" (bands for models of {size} active parameters)" if size else ""
    stack = " at the full-stack boundary" if certificate.get("boundary") else ""
    limits = _band_limits(certificate, grade)
    if limits is not None:
        how = "with 95 % confidence, " if confident else ("as measured, " if split else "")
        return (
            f"{grade} on a scale from A (best) to G: {how}this service used at most "
            f"{limits[0]:g} kWh of electricity{stack} and caused at most {limits[1]:g} g CO2e "
            f"per million output tokens{size_text}."
        )
    tail = "" if split else ", or its measurements could not confirm a better band"
    return (
        f"{grade} is the lowest grade from A (best) to G: this service used more than "
        f"{e_edges[-1]:g} kWh{stack} or caused more than {c_edges[-1]:g} g CO2e per million output tokens"
        f"{size_text}{tail}."
    )


def confirmed_meaning(certificate: dict[str, Any]) -> dict[str, str] | None:
    """What the confirmed grade says, and whether the letter is limited by efficiency or by metering.

    None for certificates without separate grades (their one letter is already the confirmed one).
    """
    split = split_grades(certificate)
    if not split:
        return None
    eff, conf = str(split["efficiency"]["overall"]), str(split["confirmed"]["overall"])
    level = f"{100 * split['level']:g} %"
    limits = _band_limits(certificate, conf)
    if limits is not None:
        text = (
            f"With {level} confidence, at most {limits[0]:g} kWh and {limits[1]:g} g CO2e "
            "per million output tokens."
        )
    else:
        text = f"The {level} range reaches beyond band F: no better band is confirmed."
    if split["limited_by"] == "measurement":
        limited = (
            f"Limited by metering: the {level} range crosses a band edge; "
            f"more precise meters could confirm {eff}."
        )
    else:
        limited = f"Limited by efficiency: the measurement confirms {eff}."
    return {"text": text, "limited": limited, "limited_by": str(split["limited_by"])}


def _largest_uncertainty(certificate: dict[str, Any]) -> str | None:
    """The input that widens the energy interval most, in words (from the uncertainty budget)."""
    budget = (certificate.get("uncertainty") or {}).get("budget") or []
    best, width = None, 0.0
    for term in budget:
        rel = term.get("energy_relative95") or term.get("carbon_relative95")
        if not rel:
            continue
        w = float(rel[1]) - float(rel[0])
        if w > width:
            best, width = term, w
    if best is None:
        return None
    return f"{best.get('input')} (about ±{50 * width:.0f} %)"


def why_this_grade(certificate: dict[str, Any]) -> list[str]:
    """Short plain sentences: which figure sets the grade, and why the confirmed letter is lower."""
    grading = certificate["grading"]
    split = split_grades(certificate)
    grade = str(split["efficiency"]["overall"]) if split else certificate["grade"]
    energy, carbon = _point(certificate, "energy"), _point(certificate, "carbon")
    if not split:
        energy, carbon = grading["energy"], grading["carbon"]
    word = "efficiency grade" if split else "grade"
    verb = "is confirmed" if split else "is awarded"
    out: list[str] = []
    if energy == carbon:
        out.append(f"Energy and carbon both earn {grade}; the {word} is the worse of the two.")
    else:
        worse = "carbon" if grade == carbon else "energy"
        better = "energy" if worse == "carbon" else "carbon"
        out.append(
            f"The {word} is set by {worse} ({grade}); {better} alone earns "
            f"{energy if better == 'energy' else carbon}."
        )
    metrics = certificate["metrics"]
    crossed = False
    for what, key, edges_key, unit in (
        ("energy", "energy_per_million_tokens", "energy_band_edges", "kWh"),
        ("carbon", "carbon_per_million_tokens", "carbon_band_edges", "g CO2e"),
    ):
        at_point, awarded = _point(certificate, what), _awarded(certificate, what)
        if at_point == awarded:
            continue
        crossed = True
        m = metrics[key]
        edges = grading[edges_key]["upper_edges"]
        interval = m.get("interval95") or [None, None]
        idx = GRADES.index(at_point)
        if idx < len(edges) and interval[1] is not None and float(interval[1]) > float(edges[idx]):
            out.append(
                f"The {what} figure, {_num(m['value'])} {unit}, lies in band {at_point}, but its 95 % "
                f"range ({_num(interval[0])}–{_num(interval[1])}) crosses {at_point}'s upper edge of "
                f"{float(edges[idx]):g}: the measurement cannot rule out {awarded}, so {awarded} {verb}."
            )
        else:
            half = (grading.get("confidence") or {}).get("top_grade_max_relative_halfwidth")
            allows = f" allows (±{100 * float(half):.0f} %)" if half is not None else " allows"
            out.append(
                f"The {what} figure lies in band {at_point}, but its 95 % range is wider than band "
                f"{at_point}{allows}, so {awarded} {verb}."
            )
    if crossed:
        widest = _largest_uncertainty(certificate)
        if widest:
            out.append(f"What widens the range most: {widest}. Better metering narrows it.")
    return out


def measurement_class(certificate: dict[str, Any]) -> dict[str, str]:
    """What was metered, as a short statement and a detail line.

    From scheme 2026.3 the certificate states it (``grading.measurement``: ``{class, label,
    detail}``, computed by grading and recomputed by verify); older certificates have it read from
    the meter layers and how the node's other parts were obtained.
    """
    stated = (certificate.get("grading") or {}).get("measurement")
    if isinstance(stated, dict) and stated.get("class"):
        return {
            "name": str(stated.get("label") or stated["class"]),
            "detail": str(stated.get("detail") or ""),
            "class": str(stated["class"]),
        }
    top = certificate.get("measurement_class")
    if isinstance(top, str) and top:
        from greencert.certificate.status import MEASUREMENT_CLASSES

        return {"name": MEASUREMENT_CLASSES.get(top, top), "detail": "", "class": top}
    declared = (certificate.get("grading") or {}).get("measurement_class")
    if isinstance(declared, dict):
        return {
            "name": str(declared.get("name") or declared.get("class")),
            "detail": str(declared.get("detail") or ""),
        }
    if isinstance(declared, str):
        return {"name": declared, "detail": ""}
    recon = certificate.get("reconciliation") or {}
    layers = {str(layer.get("layer")) for layer in recon.get("layers") or []}
    parts = (recon.get("unmetered_node_parts") or {}).get("basis")
    if "facility" in layers or (certificate.get("methodology") or {}).get("pue_basis") == "measured":
        name = "facility metered"
    elif "pdu" in layers:
        name = "PDU metered"
    elif "node" in layers or parts == "measured":
        name = "node metered"
    elif layers:
        name = "GPU sensors only"
    else:
        name = str((certificate.get("methodology") or {}).get("power_kind") or "metered") + " power"
    detail = []
    if parts == "estimated_ratio":
        ratio = (recon.get("unmetered_node_parts") or {}).get("ratio")
        detail.append(
            f"host CPU, memory and fans estimated (GPU energy × {ratio:g})" if ratio else "host estimated"
        )
    pue_basis = (certificate.get("methodology") or {}).get("pue_basis")
    if pue_basis:
        detail.append(f"facility overhead {pue_basis} (PUE {float(certificate['methodology']['pue']):.2f})")
    return {"name": name, "detail": "; ".join(detail)}


def headline(certificate: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of the headline, left to right (docs/label.md).

    Scheme 2026.3+ (``grading.efficiency`` and ``grading.confirmed``): the efficiency grade with its
    meaning, the grade confirmed at 95 % with what limits it, and the measurement class. Older
    certificates: one grade (awarded at 95 % confidence where the scheme said so) and the
    measurement statement inferred from the meter layers.
    """
    from greencert.certificate.render import GRADE_COLOURS

    grading = certificate["grading"]
    split = split_grades(certificate)
    items: list[dict[str, Any]] = []

    def card(key: str, title: str, g: str, **extra: Any) -> dict[str, Any]:
        return {
            "kind": "grade",
            "id": key,
            "title": title,
            "grade": g,
            "colour": GRADE_COLOURS.get(g, "#555"),
            "dark_text": g in ("C", "D", "E"),
            **extra,
        }

    if split:
        level = f"{100 * split['level']:g} %"
        confirmed = confirmed_meaning(certificate) or {}
        items.append(card("efficiency", "Efficiency grade", str(split["efficiency"]["overall"])))
        items.append(
            card(
                "confirmed",
                f"Confirmed at {level}",
                str(split["confirmed"]["overall"]),
                text=confirmed.get("text"),
                limited=confirmed.get("limited"),
                limited_by=split["limited_by"],
            )
        )
    else:
        g = certificate["grade"]
        title = "Grade" + (" (confirmed at 95 %)" if grading.get("confidence") else "")
        items.append(card("grade", title, g))
    mc = measurement_class(certificate)
    items.append(
        {
            "kind": "text",
            "id": "measurement",
            "title": "Measurement class" if split else "Measurement",
            "text": mc["name"],
            "detail": mc["detail"],
        }
    )
    return items


COMPONENT_NAMES = {
    "accelerator": "Accelerators (GPU)",
    "host": "Host CPU, memory, network",
    "idle_capacity": "Idle provisioned capacity",
    "facility_overhead": "Facility overhead (PUE)",
}


def boundary_rows(certificate: dict[str, Any]) -> dict[str, Any] | None:
    """The graded energy figure component by component (Google 2025 boundary), or None before 2026.3.

    Each row: name, kWh per million output tokens, share of the total, basis (measured, estimated,
    declared) and its source; ``total`` is the certificate's own total, ``sum`` the sum of the rows,
    so a reader (and a test) can see they agree.
    """
    boundary = certificate.get("boundary")
    if not isinstance(boundary, dict) or not boundary.get("components"):
        return None
    rows = []
    for c in boundary["components"]:
        per = (c.get("per_million_tokens") or {}).get("value")
        rows.append(
            {
                "id": str(c.get("component")),
                "name": COMPONENT_NAMES.get(str(c.get("component")), str(c.get("component"))),
                "per_mtok": float(per) if per is not None else None,
                "share": float(c["share"]) if c.get("share") is not None else None,
                "basis": str(c.get("basis") or ""),
                "source": str(c.get("source") or ""),
            }
        )
    total = (boundary.get("total_per_million_tokens") or {}).get("value")
    if total is None:
        total = (certificate["metrics"].get("energy_per_million_tokens") or {}).get("value")
    return {
        "rows": rows,
        "sum": sum(r["per_mtok"] or 0.0 for r in rows),
        "total": float(total) if total is not None else None,
        "method": str(boundary.get("method") or ""),
    }


def water_view(certificate: dict[str, Any]) -> dict[str, Any] | None:
    """Water per million output tokens with its WUE source and whether off-site water is included."""
    water = certificate.get("water")
    water = water if isinstance(water, dict) else {}
    per = certificate["metrics"].get("water_per_million_tokens") or water.get("per_million_tokens") or {}
    if per.get("value") is None:
        return None
    wue = water.get("wue") or {}
    source = []
    if wue.get("value") is not None:
        source.append(f"WUE {float(wue['value']):.3g} {wue.get('unit', 'L/kWh')}")
    if wue.get("basis"):
        source.append(str(wue["basis"]))
    if wue.get("standard"):
        source.append(str(wue["standard"]))
    if wue.get("source"):
        source.append(str(wue["source"]))
    offsite = water.get("offsite_included")
    return {
        "per_mtok": float(per["value"]),
        "unit": str(per.get("unit") or "L/Mtok").removesuffix("/Mtok") or "L",
        "source": ", ".join(source),
        "offsite_included": offsite,
        "offsite_text": "on-site and off-site (electricity generation) water"
        if offsite
        else "on-site water only, off-site (electricity) not included"
        if offsite is False
        else "on-site water",
    }


def token_types(certificate: dict[str, Any]) -> list[dict[str, Any]]:
    """Tokens by type when the engine exports them, else [] (OpenTelemetry GenAI usage names:
    ``gen_ai.usage.input_tokens``, ``output_tokens``, ``cache_read.input_tokens``,
    ``reasoning.output_tokens``; cached and reasoning tokens are parts of input and output)."""
    by_type = ((certificate.get("load_regime") or {}).get("tokens") or {}).get("by_type")
    if not isinstance(by_type, dict):
        return []
    names = {
        "input": "Input tokens",
        "output": "Output tokens",
        # OpenTelemetry GenAI: cache_read.input_tokens and reasoning.output_tokens are parts of
        # input_tokens and output_tokens, not additional tokens.
        "cached_input": "of which cached",
        "reasoning_output": "of which reasoning",
    }
    out = []
    order = ["input", "cached_input", "output", "reasoning_output"]  # each part under its whole
    keys = sorted(by_type, key=lambda k: order.index(k) if k in order else len(order))
    for key in keys:
        entry = by_type[key]
        # {tokens, otel[, share_of_input|share_of_output, column]} (compute/boundary.token_types)
        value = entry.get("tokens", entry.get("value")) if isinstance(entry, dict) else entry
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # the note is not a count
        share = entry.get("share_of_input", entry.get("share_of_output")) if isinstance(entry, dict) else None
        out.append(
            {
                "id": key,
                "name": names.get(key, key.replace("_", " ") + " tokens"),
                "value": float(value),
                "share": float(share) if isinstance(share, int | float) else None,
                "otel": str(entry.get("otel") or "") if isinstance(entry, dict) else "",
            }
        )
    return out


def per_query(certificate: dict[str, Any]) -> dict[str, Any]:
    """Energy (and carbon) per 1,000 queries when the evidence counts requests, else why not.

    Read from ``metrics.energy_per_thousand_queries`` / ``carbon_per_thousand_queries`` (written
    when the bundle has a request counter; docs/label.md).
    """
    metrics = certificate["metrics"]
    energy = metrics.get("energy_per_thousand_queries")
    if not energy:
        return {
            "available": False,
            "note": "not available: the evidence has no request counter",
        }
    carbon = metrics.get("carbon_per_thousand_queries") or {}
    water = metrics.get("water_per_thousand_queries") or {}
    return {
        "available": True,
        "energy": {**energy, "unit": _per_query_unit(energy.get("unit"))},
        "carbon": {**carbon, "unit": _per_query_unit(carbon.get("unit"))} if carbon else None,
        "water": {**water, "unit": _per_query_unit(water.get("unit"))} if water else None,
        "queries": (metrics.get("requests") or {}).get("value"),
    }


def _per_query_unit(unit: Any) -> str:
    """``Wh/kquery`` -> ``Wh`` (the row already says "per 1,000 queries"), ``gCO2e`` -> ``g CO2e``."""
    text = str(unit or "").removesuffix("/kquery")
    return "g CO2e" if text == "gCO2e" else text


def carbon_picture(certificate: dict[str, Any]) -> list[dict[str, Any]]:
    """Every carbon figure of the certificate per million output tokens, from the same fields as the reports.

    Location-based (graded) and market-based come from ``carbon.*.per_million_tokens`` (as in
    the carbon report) with the metrics' intervals; the SCI score is the SCI report's own
    (:func:`greencert.certificate.reports.sci_report`), so the label and the report cannot differ.
    """
    from greencert.certificate.reports import sci_report

    metrics = certificate["metrics"]
    carbon = certificate.get("carbon") or {}

    def figure(section: str, metric: str) -> tuple[float | None, list[float] | None]:
        per = ((carbon.get(section) or {}).get("per_million_tokens") or {}).get("value")
        m = metrics.get(metric) or {}
        value = per if per is not None else m.get("value")
        return (float(value) if value is not None else None), m.get("interval95")

    rows = []
    loc, loc_i = figure("location_based", "carbon_location_per_million_tokens")
    if loc is None:
        loc, loc_i = (
            float(metrics["carbon_per_million_tokens"]["value"]),
            metrics["carbon_per_million_tokens"].get("interval95"),
        )
    basis = (carbon.get("location_based") or {}).get("grid_basis") or (
        certificate.get("methodology") or {}
    ).get("grid_basis")
    rows.append(
        {
            "id": "location",
            "name": "Location-based (graded)",
            "value": loc,
            "interval": loc_i,
            "note": f"grid average, {basis}" if basis else "grid average",
        }
    )
    market, market_i = figure("market_based", "carbon_market_per_million_tokens")
    if market is not None:
        mb = carbon.get("market_based") or {}
        cfe = mb.get("cfe_hourly_share", (metrics.get("cfe_hourly_share") or {}).get("value"))
        annual = mb.get("annual_match_share", (metrics.get("annual_match_share") or {}).get("value"))
        note = []
        if cfe is not None:
            note.append(f"24/7 carbon-free energy {100 * float(cfe):.0f} %")
        if annual is not None:
            note.append(f"annual match {100 * float(annual):.0f} %")
        rows.append(
            {
                "id": "market",
                "name": "Market-based",
                "value": market,
                "interval": market_i,
                "note": ", ".join(note) or "contracts and certificates",
            }
        )
    else:
        rows.append(
            {
                "id": "market",
                "name": "Market-based",
                "value": None,
                "interval": None,
                "note": "not reported: no market-based data in the evidence",
            }
        )
    emb, emb_i = figure("embodied", "embodied_carbon_per_million_tokens")
    rows.append(
        {
            "id": "embodied",
            "name": "Embodied (hardware)",
            "value": emb,
            "interval": emb_i,
            "note": "manufacturing, amortised" if emb is not None else "not quantified: no hardware data",
        }
    )
    sci = sci_report(certificate)
    sci_m = metrics.get("sci_per_million_tokens") or {}
    rows.append(
        {
            "id": "sci",
            "name": "SCI score",
            "value": float(sci["score"]["value"]),
            "interval": sci_m.get("interval95"),
            "note": "operational + embodied (ISO/IEC 21031)"
            if sci["score"]["includes_embodied"]
            else "operational only: embodied missing",
        }
    )
    return rows


ENV_REGISTRY_URL = "GREENCERT_REGISTRY_URL"


def registry_links(certificate: dict[str, Any], registry_url: str | None = None) -> dict[str, Any]:
    """Links from the label to its registry entry, reports and validation (Data Docs).

    Relative links work wherever the registry folder is served (the files themselves, the
    Airflow page's ``/files/``); with a public base URL (``$GREENCERT_REGISTRY_URL``) the entry
    link, and so the QR code, is absolute.
    """
    cid = certificate["certificate_id"]
    base = (
        (registry_url if registry_url is not None else os.environ.get(ENV_REGISTRY_URL, ""))
        .strip()
        .rstrip("/")
    )
    site, deployment = certificate["scope"]["site"], certificate["scope"]["deployment"]
    entry_rel = f"../../index.html#{cid}"
    entry = f"{base}/index.html#{cid}" if base else entry_rel
    label_abs = f"{base}/{site}/{deployment}/{cid}.html" if base else None
    return {
        "entry": entry,
        "public": bool(base),
        "qr_payload": label_abs or f"greencert:{cid}",
        "sci_report": f"{cid}.reports/sci.md",
        "data_docs": f"{cid}.datadocs/index.html",
        "validation": f"{cid}.validation.json",
        "json": f"{cid}.json",
    }


def qr_svg(payload: str) -> str:
    """The QR code of ``payload`` as inline SVG (segno; error correction M, no XML declaration)."""
    import segno

    code = segno.make(payload, error="m", micro=False)
    buffer = io.BytesIO()
    code.save(
        buffer,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        scale=3,
        border=2,
        title=None,
        svgclass="qr",
        lineclass=None,
        omitsize=True,
    )
    return buffer.getvalue().decode("ascii")


def status_at_issue(certificate: dict[str, Any]) -> dict[str, str]:
    """The status the label can state (it is printed once): valid or development key, with its meaning."""
    from greencert.certificate import status

    shown = status.verify_status(None, bool((certificate.get("signing") or {}).get("development_key")))
    return {"status": shown, "meaning": status.MEANINGS[shown], "css": status.css_class(shown)}


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


def label_view(certificate: dict[str, Any], registry_url: str | None = None) -> dict[str, Any]:
    """Everything the label shows, computed once (the template only lays it out)."""
    hourly = certificate.get("hourly", {})
    links = registry_links(certificate, registry_url)
    m = certificate["metrics"]
    return {
        "c": certificate,
        "headline": headline(certificate),
        "meaning": grade_meaning(certificate),
        "scale": build_scale(certificate),
        "why": why_this_grade(certificate),
        "carbon": carbon_picture(certificate),
        "per_query": per_query(certificate),
        "confirmed": confirmed_meaning(certificate),
        "boundary": boundary_rows(certificate),
        "water": water_view(certificate),
        "token_types": token_types(certificate),
        "period_text": human_period(certificate["period"]),
        "issued_text": human_date(certificate["issued_at"]),
        "valid_until_text": human_date(certificate["valid_until"]),
        "status": status_at_issue(certificate),
        "links": links,
        "qr": qr_svg(links["qr_payload"]),
        "bands": band_rows(certificate),
        "chart": build_chart(hourly),
        "hours": len(hourly.get("hour_start", [])),
        "verify": verify_commands(certificate),
        "energy": m["energy_per_million_tokens"],
        "size_words": size_class_words(certificate["grading"].get("size_class")),
        "num": _num,
    }


def render_label(certificate: dict[str, Any], registry_url: str | None = None) -> str:
    """The label HTML (autoescaped, self-contained, one A4 page when printed)."""
    from markupsafe import Markup

    from greencert.certificate.templates import template

    view = label_view(certificate, registry_url)
    view["qr"] = Markup(view["qr"])  # segno's own SVG: no text from the certificate in it
    return template("label.html.j2").render(**view)


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


_RELATIVE_HREF = re.compile(r' href="(?![a-zA-Z][a-zA-Z0-9+.-]*:)[^"]*"')


def render_pdf(html: str, issued_at: dt.datetime | None = None, timeout: float = 120.0) -> bytes:
    """Print the label HTML to PDF with headless Chromium; raise LabelError if it cannot."""
    chromium = find_chromium()
    if chromium is None:
        raise LabelError(f"no Chromium found for the PDF label (install chromium or set {ENV_CHROMIUM})")
    with tempfile.TemporaryDirectory(prefix="greencert-label-") as tmp:
        page = Path(tmp) / "label.html"
        # Chromium turns relative links into file:// URLs of this temporary folder: useless in a
        # PDF and different every time. They are printed as text; absolute links stay links.
        page.write_text(_RELATIVE_HREF.sub("", html), encoding="utf-8")
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

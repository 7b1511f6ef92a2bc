"""Standard reports derived from one certificate (a signed document, so anyone can re-derive them).

* SCI (Green Software Foundation, ISO/IEC 21031:2024), laid out after the GSF
  SCI case-study template: software boundary, functional unit, quantification
  method, the calculation (coefficient table with sources) and the score.
* EU Energy Efficiency Directive (EU) 2023/1791 art. 12 data-centre indicators
  (Delegated Regulation (EU) 2024/1364): those the evidence supports.
* China GB 40879-2021 energy-efficiency grade implied by the PUE.

Reports are not signed themselves: they are pure functions of the signed
certificate (``greencert report CERT`` regenerates them byte for byte).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from greencert.units import Q_

SCI_SPEC = "Software Carbon Intensity (SCI) specification v1.1, ISO/IEC 21031:2024"
SCI_TEMPLATE = (
    "GSF SCI case-study template (sci-guide): boundary, functional unit, quantification, calculation"
)
EED_REGULATION = (
    "Directive (EU) 2023/1791 art. 12 and Annex VII; Commission Delegated Regulation (EU) 2024/1364"
)

# GB 40879-2021 grades by PUE (upper edges, inclusive). Grade 3 is also the
# standard's limit value: a PUE above it does not meet the standard.
GB40879_GRADES = ((1, 1.20), (2, 1.30), (3, 1.50))


def _value(cert: dict[str, Any], metric: str) -> float | None:
    m = cert.get("metrics", {}).get(metric)
    return None if m is None else float(m["value"])


def _headline(cert: dict[str, Any], metric: str) -> float:
    """A metric every certificate has (certificate.schema.json requires it)."""
    return float(cert["metrics"][metric]["value"])


def _sci_components_from_carbon(cert: dict[str, Any]) -> dict[str, Any] | None:
    """SCI components computed by the carbon module (``carbon.sci``), when the certificate has them."""
    sci = (cert.get("carbon") or {}).get("sci")
    return sci if isinstance(sci, dict) and sci else None


def _boundary(includes_embodied: bool) -> dict[str, list[str]]:
    return {
        "included": [
            "accelerators/servers metered by the bundle's power series (IT energy)",
            "data-centre overhead through the PUE (cooling, power conversion)",
            *(
                ["embodied emissions of the metered hardware, amortised over the period"]
                if includes_embodied
                else []
            ),
        ],
        "excluded": [
            "client devices and wide-area network traffic (not metered by the operator)",
            "model training and fine-tuning (a separate software system)",
            *([] if includes_embodied else ["embodied emissions (no hardware inventory in the evidence)"]),
        ],
    }


def _sci_from_metrics(cert: dict[str, Any]) -> dict[str, Any]:
    """Operational SCI from the certificate's metrics alone (certificates without ``carbon.sci``)."""
    methodology = cert["methodology"]
    energy = Q_(_headline(cert, "facility_energy"), "kWh")
    operational = Q_(_headline(cert, "operational_carbon"), "gCO2e")
    functional = Q_(_headline(cert, "output_tokens"), "token").to("Mtok")
    intensity = (operational / energy).to("gCO2e/kWh") if energy.magnitude > 0 else Q_(0.0, "gCO2e/kWh")
    score = (operational / functional).to("gCO2e/Mtok")
    coefficients = [
        {
            "symbol": "E",
            "name": "facility energy (IT energy x PUE)",
            "value": round(energy.magnitude, 9),
            "unit": "kWh",
            "source": f"metered {methodology.get('power_kind')} power x PUE ({methodology.get('pue_basis')})",
        },
        {
            "symbol": "PUE",
            "name": "power usage effectiveness",
            "value": methodology.get("pue"),
            "unit": "1",
            "source": str(methodology.get("pue_basis")),
        },
        {
            "symbol": "I",
            "name": "location-based grid intensity, energy-weighted over the period",
            "value": round(intensity.magnitude, 9),
            "unit": "gCO2e/kWh",
            "source": f"{methodology.get('grid_source')} ({methodology.get('grid_basis')})",
        },
        {
            "symbol": "M",
            "name": "embodied emissions amortised over the period",
            "value": None,
            "unit": "gCO2e",
            "source": "not quantified: the certificate has no embodied-carbon data",
        },
        {
            "symbol": "R",
            "name": "output tokens",
            "value": round(functional.magnitude, 9),
            "unit": "Mtok",
            "source": "increase of the output-token counters",
        },
    ]
    return {
        "coefficients": coefficients,
        "components": [
            {"name": "operational (E x I) / R", "unit": "gCO2e/Mtok", "value": round(score.magnitude, 9)}
        ],
        "score": {"value": round(score.magnitude, 9), "unit": "gCO2e/Mtok"},
        "formula": "SCI (operational part) = (E x I) / R",
    }


def sci_report(cert: dict[str, Any]) -> dict[str, Any]:
    """SCI = (E x I + M) per R, R = one million output tokens.

    Uses the components computed by the carbon module (``carbon.sci``) when the
    certificate has them; otherwise computes the operational part from the
    metrics and says that M is missing.
    """
    carbon_sci = _sci_components_from_carbon(cert)
    sci = carbon_sci if carbon_sci else _sci_from_metrics(cert)
    coefficients = [
        {k: c.get(k) for k in ("symbol", "name", "value", "unit", "source", "tag") if k in c}
        for c in sci["coefficients"]
    ]
    embodied = next((c for c in coefficients if c["symbol"] == "M"), None)
    complete = embodied is not None and embodied.get("value") is not None
    methodology = cert["methodology"]
    return {
        "report": "sci",
        "specification": SCI_SPEC,
        "template": SCI_TEMPLATE,
        "certificate_id": cert["certificate_id"],
        "period": cert["period"],
        "overview": {
            "site": cert["scope"]["site"],
            "deployment": cert["scope"]["deployment"],
            "model": cert["scope"]["model"],
            "hardware": cert["scope"]["hardware"],
        },
        "software_boundary": _boundary(complete),
        "functional_unit": {
            "R": "1 million output tokens (Mtok)",
            "rationale": "output tokens are what an inference service delivers and what its energy use scales with",
        },
        "quantification_method": {
            "E": f"measured: {methodology.get('power_kind')} power telemetry integrated over time, x PUE",
            "I": f"grid data ({methodology.get('grid_basis')}): {methodology.get('grid_source')}",
            "M": (embodied or {}).get("source") if complete else "not quantified",
            "R": "measured: serving engine token counters",
        },
        "coefficients": coefficients,
        "components": sci.get("components", []),
        "score": {
            "value": sci["score"]["value"],
            "unit": sci["score"]["unit"],
            "formula": sci.get("formula"),
            "includes_embodied": complete,
        },
        "components_source": (
            "certificate section carbon.sci (computed by greencert.carbon)"
            if carbon_sci
            else "computed from the certificate's metrics (no carbon.sci section)"
        ),
        "note": None
        if complete
        else "M is missing, so this score covers operational emissions only and is a lower bound of the SCI.",
    }


# Instrument types that certify renewable origin. A GO can also certify nuclear
# origin in some countries, which is why ``carbon_free`` alone is not enough.
RENEWABLE_TYPES = ("go", "rec", "gec", "i-rec", "ppa")


def _renewable_factor(cert: dict[str, Any]) -> tuple[float | None, str]:
    """REF (ISO/IEC 30134-3): renewable energy claimed through instruments / total energy."""
    carbon = cert.get("carbon") or {}
    market = carbon.get("market_based") or {}
    instruments = market.get("instruments") or []
    facility = _value(cert, "facility_energy")
    if not instruments or not facility:
        return None, "not reported: the evidence holds no energy attribute certificates or PPAs"
    renewable_mwh = sum(
        float(i.get("matched_mwh") or 0.0)
        for i in instruments
        if i.get("type") in RENEWABLE_TYPES and i.get("carbon_free")
    )
    ref = float(Q_(renewable_mwh, "MWh").to("kWh").magnitude) / facility
    return round(ref, 9), (
        "energy matched to this consumption by carbon-free GO/REC/GEC/I-REC/PPA instruments "
        "(carbon.market_based.instruments), assumed renewable; on-site generation is not in the evidence"
    )


def eed_report(cert: dict[str, Any]) -> dict[str, Any]:
    methodology = cert["methodology"]
    ref, ref_source = _renewable_factor(cert)
    return {
        "report": "eu-eed",
        "regulation": EED_REGULATION,
        "certificate_id": cert["certificate_id"],
        "period": cert["period"],
        "site": cert["scope"]["site"],
        "scope_note": (
            "Indicators for the certified deployment over the certified period, as support for the site's "
            "annual EED reporting; they are not the site-level annual report themselves."
        ),
        "indicators": {
            "energy_consumption": {
                "value": _value(cert, "facility_energy"),
                "unit": "kWh",
                "basis": "facility energy attributable to the deployment (IT energy x PUE)",
            },
            "it_energy": {"value": _value(cert, "it_energy"), "unit": "kWh", "basis": "metered"},
            "pue": {
                "value": methodology.get("pue"),
                "unit": "1",
                "basis": methodology.get("pue_basis"),
                "standard": "ISO/IEC 30134-2",
            },
            "renewable_energy_factor": {
                "value": ref,
                "unit": "1",
                "standard": "ISO/IEC 30134-3",
                "source": ref_source,
            },
        },
        "not_supported": {
            "wue": "water use is not in the evidence",
            "energy_reuse_factor": "reused heat is not in the evidence",
            "floor_area_and_it_power_demand": "site facts are not in the evidence",
        },
    }


def gb40879_grade(pue: float) -> int | None:
    """GB 40879-2021 grade for a PUE, or None when above the limit value (grade 3 edge)."""
    for grade, edge in GB40879_GRADES:
        if pue <= edge:
            return grade
    return None


def gb40879_report(cert: dict[str, Any]) -> dict[str, Any]:
    pue = float(cert["methodology"]["pue"])
    grade = gb40879_grade(pue)
    return {
        "report": "gb-40879-2021",
        "standard": "GB 40879-2021 Maximum allowable values of energy efficiency and energy efficiency grades for data centres",
        "certificate_id": cert["certificate_id"],
        "period": cert["period"],
        "pue": pue,
        "pue_basis": cert["methodology"].get("pue_basis"),
        "grade": grade,
        "meets_limit_value": grade is not None,
        "thresholds": [
            {
                "grade": g,
                "max_pue": edge,
                "note": "as commonly quoted; check the standard's text" if g == 1 else None,
            }
            for g, edge in GB40879_GRADES
        ],
        "caveat": (
            "Implied by the certified period's PUE. The standard's own assessment uses its measurement method "
            "and statistical period for the whole data centre; this is an indication, not a GB 40879 assessment."
        ),
    }


def sci_markdown(report: dict[str, Any]) -> str:
    """The SCI report as Markdown, following the GSF template's sections (text, not HTML: no escaping issue)."""
    lines = [
        f"# SCI report: {report['certificate_id']}",
        "",
        f"Specification: {report['specification']}. Period {report['period']['start']} to {report['period']['end']}.",
        "",
        "## Overview",
        "",
        *(f"- {k}: {v}" for k, v in report["overview"].items()),
        "",
        "## (What) Software boundary",
        "",
        "Included:",
        *(f"- {x}" for x in report["software_boundary"]["included"]),
        "",
        "Excluded:",
        *(f"- {x}" for x in report["software_boundary"]["excluded"]),
        "",
        "## (Scale) Functional unit",
        "",
        f"R = {report['functional_unit']['R']}: {report['functional_unit']['rationale']}.",
        "",
        "## (How) Quantification method",
        "",
        *(f"- {k}: {v}" for k, v in report["quantification_method"].items()),
        "",
        "## (Quantify) SCI value calculation",
        "",
        "| symbol | quantity | value | unit | source |",
        "|---|---|---|---|---|",
        *(
            f"| {c['symbol']} | {c['name']} | {'n/a' if c['value'] is None else format(c['value'], '.6g')} "
            f"| {c['unit']} | {c['source']} |"
            for c in report["coefficients"]
        ),
        "",
        f"**SCI = {report['score']['value']:.6g} {report['score']['unit']}** ({report['score']['formula']}).",
        "",
    ]
    if report.get("note"):
        lines += [f"Note: {report['note']}", ""]
    lines += ["## (Report)", "", f"Components: {report['components_source']}.", ""]
    return "\n".join(lines)


def build_reports(cert: dict[str, Any]) -> dict[str, bytes]:
    """File name -> bytes of every report for ``cert`` (deterministic)."""

    def dump(data: dict[str, Any]) -> bytes:
        return (json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    sci = sci_report(cert)
    return {
        "sci.json": dump(sci),
        "sci.md": sci_markdown(sci).encode(),
        "eu-eed.json": dump(eed_report(cert)),
        "gb-40879.json": dump(gb40879_report(cert)),
    }


def write_reports(cert: dict[str, Any], folder: Path) -> Path:
    """Write the reports into ``folder`` (created); each file atomically."""
    from greencert.atomic import atomic_write_bytes

    folder = Path(folder)
    for name, data in build_reports(cert).items():
        atomic_write_bytes(folder / name, data)
    return folder

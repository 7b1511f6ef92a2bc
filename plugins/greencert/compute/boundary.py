"""The full-stack boundary, water and per-query figures (scheme 2026.3, docs/boundary.md).

Google's 2025 per-prompt methodology (Elsworth et al., arXiv 2508.15734) counts four
components: active accelerators, the host (CPU, DRAM, network, fans), idle provisioned
capacity (machines kept for reliability and latency but not serving) and data-centre
overhead. GreenCert states each one for the certified period, measured where the evidence
meters it and estimated with a cited factor otherwise; their sum is the graded figure:

    facility = (IT + idle) x PUE,  idle = IT x share,  overhead = facility - IT - idle.

Everything here is active only when the scheme has the keys (``boundary``, ``water``,
``per_query``): schemes 2026.1/2026.2 give the same figures as before, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from greencert.errors import ConfigError
from greencert.units import Q_, significant
from greencert.yamlio import load_yaml_file

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
BOUNDARY_FORMAT = "greencert-boundary/1"
COMPONENTS = ("accelerator", "host", "idle_capacity", "facility_overhead")
METHOD = (
    "full stack after Google 2025 (Elsworth et al., arXiv 2508.15734): active accelerators, host "
    "(CPU, memory, network, fans), idle provisioned capacity and facility overhead; each measured where "
    "the evidence meters it, else estimated with a cited factor (docs/boundary.md)"
)
WUE_STANDARD = "ISO/IEC 30134-9"


@dataclass(frozen=True)
class IdleCapacity:
    """Idle provisioned capacity as a share of the serving machines' (IT) energy."""

    share: float
    low: float
    high: float
    basis: str  # declared (manifest: metered or a declared share) | estimated (scheme default)
    source: str


def boundary_defaults(scheme: Any) -> dict[str, Any] | None:
    """The scheme's boundary defaults file, checked; None when the scheme has no boundary."""
    spec = (getattr(scheme, "raw", None) or {}).get("boundary")
    if not spec:
        return None
    name = str(spec["defaults"])
    if Path(name).name != name:
        raise ConfigError("boundary defaults must be a plain file name under greencert/data", name)
    path = DATA_DIR / name
    data = load_yaml_file(path, ConfigError, "boundary defaults")
    if not isinstance(data, dict) or data.get("format") != BOUNDARY_FORMAT:
        raise ConfigError(f"not a {BOUNDARY_FORMAT} file", str(path))
    try:
        idle = data["idle_capacity"]
        if not 0.0 <= float(idle["low"]) <= float(idle["value"]) <= float(idle["high"]) <= 1.0:
            raise ValueError("idle_capacity needs 0 <= low <= value <= high <= 1")
        acc = float(data["accelerator_share_of_it"]["value"])
        if not 0.0 < acc <= 1.0:
            raise ValueError("accelerator_share_of_it must be in (0, 1]")
        str(idle["source"]), str(data["accelerator_share_of_it"]["source"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"boundary defaults incomplete or invalid: {exc}", str(path)) from None
    return data


def _text(value: Any) -> str:
    return " ".join(str(value).split())


def idle_capacity(manifest: Any, defaults: dict[str, Any] | None) -> IdleCapacity | None:
    """The idle share the figures add: none without a boundary, else the manifest's or the default."""
    if defaults is None:
        return None
    spec = manifest.idle_capacity
    if spec is not None and spec.basis == "metered":
        return IdleCapacity(
            0.0,
            0.0,
            0.0,
            "declared",
            "declared metered: every device provisioned for the deployment is in the power evidence",
        )
    if spec is not None:
        share = float(spec.share)
        return IdleCapacity(share, share, share, "declared", _text(spec.source))
    d = defaults["idle_capacity"]
    return IdleCapacity(float(d["value"]), float(d["low"]), float(d["high"]), "estimated", _text(d["source"]))


def _metric(value: float, unit: str) -> dict[str, Any]:
    return {"value": significant(value), "unit": unit}


def boundary_section(bundle: Any, fig: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """The certificate's ``boundary`` section: the four components of the facility energy."""
    m = bundle.manifest
    it = float(fig.it_energy.to("kWh").magnitude)
    facility = float(fig.facility_energy.to("kWh").magnitude)
    mtok = float(fig.output_tokens.to("Mtok").magnitude)
    idle_spec: IdleCapacity = fig.idle_capacity
    idle = float(fig.idle_capacity_energy.to("kWh").magnitude)
    parts = fig.node_parts
    basis = parts.basis if parts is not None else None
    series = f"{m.power.file} ({m.power.meter_class or 'meter class not declared'})"
    split = defaults["accelerator_share_of_it"]
    if basis in ("node_meter", "estimated_ratio"):
        # The certified series meters the GPUs themselves: the accelerator layer is measured.
        accelerator = float(np.sum(parts.power_hourly_kwh))
        acc_basis, acc_source = "measured", f"GPU power series {series}"
        if basis == "node_meter":
            host_basis = "measured"
            host_source = f"node meters ({', '.join(parts.node_sources)}) minus the GPU series"
        else:
            assert parts.ratio is not None
            host_basis = "estimated"
            host_source = (
                f"GPU energy x (node/GPU ratio {parts.ratio[0]} - 1), no node meter in the bundle "
                "(uncertainty defaults node_overhead)"
            )
    elif parts is None and m.power.meter_class == "gpu_sensor":
        # The scheme adds no node parts: IT is the GPU series as metered and the host is not counted.
        accelerator = it
        acc_basis, acc_source = "measured", f"GPU power series {series}"
        host_basis, host_source = "estimated", "not added by the scheme (GPU-only IT energy)"
    else:
        # Node-level (or wider) meters only: the split inside the node follows Google 2025.
        accelerator = it * float(split["value"])
        acc_basis = "estimated"
        acc_source = f"metered IT energy ({series}) x {significant(float(split['value']), 6)}: " + _text(
            split["source"]
        )
        host_basis = "estimated"
        host_source = f"metered IT energy ({series}) minus the estimated accelerator share"
    host = it - accelerator
    overhead = facility - it - idle
    pue_source = (
        "facility and IT meters (measured PUE, hourly)"
        if fig.pue_basis == "measured"
        else f"declared PUE {m.facility.pue}"
        + (f" (ISO/IEC 30134-2 category {m.facility.pue_category})" if m.facility.pue_category else "")
    )
    rows = [
        ("accelerator", accelerator, acc_basis, acc_source),
        ("host", host, host_basis, host_source),
        ("idle_capacity", idle, idle_spec.basis, idle_spec.source),
        (
            "facility_overhead",
            overhead,
            "measured" if fig.pue_basis == "measured" else "declared",
            f"(PUE - 1) x (IT + idle capacity); {pue_source}",
        ),
    ]
    components = [
        {
            "component": name,
            "energy": _metric(energy, "kWh"),
            "per_million_tokens": _metric(energy / mtok, "kWh/Mtok"),
            "share": significant(energy / facility, 9) if facility > 0 else 0.0,
            "basis": b,
            "source": source,
        }
        for name, energy, b, source in rows
    ]
    section: dict[str, Any] = {
        "method": METHOD,
        "components": components,
        # The graded figure, computed exactly as metrics.energy_per_million_tokens.
        "total_per_million_tokens": _metric(
            float(fig.energy_per_million_tokens.to("kWh/Mtok").magnitude), "kWh/Mtok"
        ),
    }
    if idle_spec.basis == "estimated":
        section["idle_capacity_range"] = [idle_spec.low, idle_spec.high]
    return section


@dataclass
class Water:
    section: dict[str, Any]
    onsite_l: float
    offsite_l: float

    @property
    def total_l(self) -> float:
        return self.onsite_l + self.offsite_l


def water(bundle: Any, fig: Any) -> Water | None:
    """Water per million tokens from a declared WUE (ISO/IEC 30134-9); None without one.

    WUE is site water over IT energy, so the on-site water of the deployment is WUE x its
    IT energy including idle provisioned capacity (the deployment's IT equipment). Off-site
    water (cooling of the power plants) is facility energy x the declared intensity.
    """
    f = bundle.manifest.facility
    if f.wue is None:
        return None
    it = float(fig.it_energy.to("kWh").magnitude)
    idle = (
        float(fig.idle_capacity_energy.to("kWh").magnitude) if fig.idle_capacity_energy is not None else 0.0
    )
    facility = float(fig.facility_energy.to("kWh").magnitude)
    mtok = float(fig.output_tokens.to("Mtok").magnitude)
    onsite = float((Q_(f.wue.value, "L/kWh") * Q_(it + idle, "kWh")).to("L").magnitude)
    offsite = 0.0
    wue: dict[str, Any] = {
        "value": f.wue.value,
        "unit": "L/kWh",
        "basis": "declared",
        "source": f.wue.source,
        "standard": WUE_STANDARD,
    }
    if f.wue.period:
        wue["period"] = f.wue.period
    section: dict[str, Any] = {
        "wue": wue,
        "onsite": _metric(onsite, "L"),
        "onsite_per_million_tokens": _metric(onsite / mtok, "L/Mtok"),
        "offsite_included": f.offsite_water is not None,
    }
    if f.offsite_water is not None:
        offsite = float((Q_(f.offsite_water.intensity, "L/kWh") * Q_(facility, "kWh")).to("L").magnitude)
        section["offsite_intensity"] = {
            "value": f.offsite_water.intensity,
            "unit": "L/kWh",
            "source": f.offsite_water.source,
            "applies_to": "facility energy",
        }
        section["offsite"] = _metric(offsite, "L")
    section["per_million_tokens"] = _metric((onsite + offsite) / mtok, "L/Mtok")
    section["method"] = (
        "on-site: WUE x IT energy (including idle provisioned capacity), ISO/IEC 30134-9; "
        + (
            "off-site: facility energy x the declared water intensity of electricity"
            if f.offsite_water
            else "off-site water of electricity not included"
        )
    )
    return Water(section, onsite, offsite)


def request_count(bundle: Any) -> float | None:
    """Completed requests over the period (increase of the counters, resets handled), or None."""
    if bundle.requests is None:
        return None
    from greencert.compute.integrate import integrate

    m = bundle.manifest
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    return float(integrate(bundle.requests, "requests", "counter", start, end, np.inf).per_hour.sum())


def per_query(bundle: Any, fig: Any, water_l: float | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(section, metrics) per 1,000 queries (AI Energy Score's unit); None without request counters."""
    n = request_count(bundle)
    if n is None:
        return None
    if n <= 0:
        from greencert.errors import BundleError

        raise BundleError(
            "the requests counter shows no completed request in the period: figures per query undefined",
            bundle.requests.file,
        )
    queries = Q_(n, "query")
    energy = (fig.facility_energy / queries).to("Wh/kquery").magnitude
    carbon = (fig.operational_carbon / queries).to("gCO2e/kquery").magnitude
    metrics: dict[str, Any] = {
        "requests": {"value": significant(n), "unit": "query"},
        "energy_per_thousand_queries": _metric(float(energy), "Wh/kquery"),
        "carbon_per_thousand_queries": _metric(float(carbon), "gCO2e/kquery"),
    }
    if water_l is not None:
        metrics["water_per_thousand_queries"] = _metric(
            float((Q_(water_l, "L") / queries).to("L/kquery").magnitude), "L/kquery"
        )
    spec = bundle.manifest.requests
    source = bundle.requests.file + (f" ({spec.metric})" if spec.metric else "")
    section = {
        "requests": significant(n),
        "source": source,
        "definition": "a query is one completed request (increase of the engine's request-success counter)",
        "energy_per_thousand_queries": metrics["energy_per_thousand_queries"],
        "carbon_per_thousand_queries": metrics["carbon_per_thousand_queries"],
        "output_tokens_per_query": significant(float(fig.output_tokens.to("token").magnitude) / n, 6),
    }
    if "water_per_thousand_queries" in metrics:
        section["water_per_thousand_queries"] = metrics["water_per_thousand_queries"]
    return section, metrics


# OpenTelemetry GenAI semantic conventions (gen_ai.usage.*): cached input tokens are part of the
# input tokens, reasoning tokens part of the output tokens.
OTEL_TOKEN_NAMES = {
    "input": "gen_ai.usage.input_tokens",
    "output": "gen_ai.usage.output_tokens",
    "cached_input": "gen_ai.usage.cache_read.input_tokens",
    "reasoning_output": "gen_ai.usage.reasoning.output_tokens",
}
_TYPE_COLUMNS = {"cached_input": "cached_input_tokens", "reasoning_output": "reasoning_output_tokens"}


def token_types(bundle: Any, fig: Any) -> dict[str, Any] | None:
    """Tokens by type over the period, named after OpenTelemetry GenAI; None without type counters."""
    present = {k: c for k, c in _TYPE_COLUMNS.items() if c in bundle.tokens.values}
    if not present:
        return None
    from greencert.compute.integrate import integrate

    m = bundle.manifest
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    total = {
        "input": float(fig.input_tokens.to("token").magnitude),
        "output": float(fig.output_tokens.to("token").magnitude),
    }
    out: dict[str, Any] = {
        kind: {"tokens": significant(n), "otel": OTEL_TOKEN_NAMES[kind]} for kind, n in total.items()
    }
    for kind, column in present.items():
        n = float(integrate(bundle.tokens, column, "counter", start, end, np.inf).per_hour.sum())
        parent = "input" if kind == "cached_input" else "output"
        out[kind] = {
            "tokens": significant(n),
            "otel": OTEL_TOKEN_NAMES[kind],
            f"share_of_{parent}": significant(n / total[parent], 6) if total[parent] > 0 else None,
            "column": f"{bundle.tokens.file} {column}",
        }
    out["note"] = (
        "OpenTelemetry GenAI token types: cached input tokens are part of the input tokens and reasoning "
        "tokens part of the output tokens; the graded figure counts every output token, reasoning included"
    )
    return out

"""Measurement integrity of one bundle: intervals, reconciliation, load regime, findings.

``assess`` runs after ``compute_figures`` (scheme 2026.2+) and returns what the
compute stage adds to ``figures.json``: an ``interval95`` for each headline
metric and the ``uncertainty``, ``reconciliation``, ``load_regime`` and
``findings`` sections that ``build_certificate`` copies onto the certificate.
See docs/uncertainty.md for the method and its defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greencert.bundle.reader import Bundle
from greencert.compute.fold import power_fold
from greencert.compute.load_regime import load_regime
from greencert.compute.reconcile import (
    LayerSeries,
    NodeParts,
    finding,
    meter_layers,
    primary_layer,
    reconcile,
)
from greencert.compute.token_coverage import TokenCoverage, check_minimum, first_uncovered, token_coverage
from greencert.compute.uncertainty import (
    GRID_KINDS,
    SOURCES,
    Model,
    interval95,
    load_defaults,
    meter_accuracy,
    relative_range,
    simulate,
)
from greencert.grading import Scheme, effective_max_device_power
from greencert.units import Q_, significant


@dataclass
class Assessment:
    intervals: dict[str, list[float]]
    sections: dict[str, Any]
    methodology: dict[str, Any] = field(default_factory=dict)


def _grid_kinds(bundle: Bundle, fig: Any) -> np.ndarray:
    """Per hour: 0 measured, 1 estimated (or filled by rule), 2 annual factor."""
    n = fig.hour_starts.size
    if fig.grid_basis == "annual":
        return np.full(n, 2, dtype=np.int64)
    kinds = np.zeros(n, dtype=np.int64)
    try:
        from greencert.carbon.report import grid_flags
    except ImportError:  # carbon accounting not installed: every hourly value counts as measured
        return kinds
    flags = grid_flags(bundle, np.floor(fig.hour_starts / 3600.0) * 3600.0)
    kinds[np.asarray(flags["is_estimated"], bool) | np.asarray(flags["filled"], bool)] = 1
    return kinds


def _crosschecked(bundle: Bundle, scheme: Scheme) -> dict[str, float]:
    """Meters compute.crosscheck compares per device (``crosscheck: true``), with their tolerance."""
    specs = [s for s in bundle.manifest.meters if getattr(s, "crosscheck", False)]
    if not specs:
        return {}
    from greencert.compute.crosscheck import tolerance_for

    return {f"meters.{s.name}": tolerance_for(s.crosscheck_tolerance, scheme) for s in specs}


def _embodied(figures: dict[str, Any]) -> tuple[float | None, str | None]:
    emb = (figures.get("carbon") or {}).get("embodied")
    if not emb:
        return None, None
    value = Q_(emb["emissions"]["value"], emb["emissions"]["unit"]).to("gCO2e").magnitude
    return float(value), "declared" if emb.get("basis") == "declared inventory" else "default_profile"


def build_model(
    bundle: Bundle, scheme: Scheme, fig: Any, figures: dict[str, Any], defaults: dict[str, Any]
) -> tuple[Model, NodeParts, LayerSeries, Any, list[dict[str, Any]], dict[str, Any]]:
    """The Monte Carlo model of this bundle, and the reconciliation it rests on."""
    assert scheme.integrity is not None
    m = bundle.manifest
    spec = m.power
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    # The power series' gaps and sampling noise, folded shard by shard with the validation (compute/fold.py).
    power_rows = power_fold(bundle, scheme)
    gaps = power_rows.gap_bounds()
    # The neighbours' bounds stay the best estimate of a gap's energy (reconciliation); under
    # ``gap_bound: device_ceiling`` the interval lets a gap hold up to the device's power ceiling.
    gaps_estimate = gaps
    if scheme.raw.get("measurement_integrity", {}).get("gap_bound") == "device_ceiling" and gaps.count:
        ceiling_w = effective_max_device_power(spec, scheme)
        ceiling = float(Q_(ceiling_w, "W").to(spec.unit).magnitude)
        gaps = power_rows.gap_bounds(ceiling=ceiling)
    noise = power_rows.sampling_variance_kwh2()
    parts = fig.node_parts
    if parts is None:  # the scheme does not add node parts: IT energy is the series as metered
        it = np.asarray(fig.it_energy_hourly_kwh, dtype=np.float64)
        parts = NodeParts(
            "not_added", it, it, layers=meter_layers(bundle, start, end, scheme.max_gap_seconds, defaults)
        )
    accuracy, accuracy_basis = meter_accuracy(spec, defaults)
    devices = list(fig.device_energy_kwh)
    power = LayerSeries(
        "power",
        primary_layer(spec.meter_class, defaults),
        spec.meter_class,
        spec.kind,
        accuracy,
        accuracy_basis,
        bundle.power.file,
        parts.power_hourly_kwh,
        devices,
        np.array([fig.device_energy_kwh[d] for d in devices]),
    )
    rec = reconcile(
        bundle,
        parts,
        power,
        gaps_estimate.mid_kwh,
        fig.hour_starts,
        scheme.integrity.same_layer_tolerance,
        scheme.integrity.pue_tolerance,
        defaults,
        _crosschecked(bundle, scheme),
    )
    measured_hw, estimated_hw, annual_hw = (float(defaults["grid"][k]) for k in GRID_KINDS)
    model = Model(
        tokens_mtok=float(fig.output_tokens.to("Mtok").magnitude),
        primary_kwh=parts.power_hourly_kwh,
        gaps=gaps,
        noise_var_kwh2=noise,
        primary_accuracy=accuracy,
        intensity=np.asarray(fig.intensity_hourly, dtype=np.float64),
        grid_kind=_grid_kinds(bundle, fig),
        grid_halfwidth=(measured_hw, estimated_hw, annual_hw),
        cross_factor=rec.cross_factor,
    )
    idle = getattr(fig, "idle_capacity", None)
    if idle is not None:
        # Facility = (IT + IT x share) x PUE; an unmetered share is uniform in [low, high].
        model.idle_share = (float(idle.share), float(idle.low), float(idle.high))
        model.idle_uncertain = str(idle.basis) != "measured"
    if parts.basis == "estimated_ratio":
        model.it_mode, model.ratio = "ratio", parts.ratio
    elif parts.basis == "node_meter":
        model.it_mode, model.node_kwh, model.node_accuracy = (
            "node_meter",
            parts.node_hourly_kwh,
            parts.node_accuracy,
        )
    pue_info: dict[str, Any]
    if fig.pue_basis == "measured":
        assert m.facility.meter is not None and m.facility.it_meter is not None
        it_h = np.asarray(fig.it_energy_hourly_kwh, dtype=np.float64)
        fac_h = np.asarray(fig.facility_energy_hourly_kwh, dtype=np.float64)
        model.pue_mode = "measured"
        model.pue_hourly = np.where(it_h > 0, fac_h / np.where(it_h > 0, it_h, 1.0), 0.0)
        if model.idle_share is not None:  # the idle share is applied on its own (point_facility_kwh)
            model.pue_hourly = model.pue_hourly / model.idle_factor()
        model.facility_accuracy, fac_basis = meter_accuracy(m.facility.meter, defaults)
        model.it_meter_accuracy, itm_basis = meter_accuracy(m.facility.it_meter, defaults)
        pue_info = {
            "distribution": f"facility meter +-{model.facility_accuracy:.1%}, IT meter +-{model.it_meter_accuracy:.1%} "
            "(uniform, systematic)",
            "basis": f"measured: facility meter {fac_basis}; IT meter {itm_basis}",
        }
    else:
        cat = m.facility.pue_category
        hw = float(defaults["pue"]["category"][cat]) if cat else float(defaults["pue"]["undeclared_category"])
        model.pue_value, model.pue_halfwidth = float(m.facility.pue), hw  # type: ignore[arg-type]
        pue_info = {
            "distribution": f"uniform +-{hw:.0%} on the declared PUE {m.facility.pue}",
            "basis": (f"ISO/IEC 30134-2 category {cat}" if cat else "declared without a measurement category")
            + "; "
            + " ".join(str(defaults["pue"]["source"]).split()),
        }
    tok = _token_coverage(bundle, scheme)
    if tok is not None and scheme.raw.get("measurement_integrity", {}).get("token_coverage_term") is True:
        model.tokens_missing_high_mtok = tok.missing_high / 1e6
    k = class_widening(scheme, defaults)
    if k != 1.0:
        # 2026.3 defaults: a class is a maximum error, so the central 95 % of each meter's
        # distribution is the whole class (a meter at the edge of its class is inside the interval).
        model.primary_accuracy *= k
        model.node_accuracy *= k
        model.facility_accuracy *= k
        model.it_meter_accuracy *= k
        if model.pue_mode == "measured":
            pue_info["distribution"] += f"; each widened x{k:.4g} so that its central 95 % is the whole class"
    emb_g, emb_kind = _embodied(figures)
    if emb_g is not None and emb_kind is not None:
        model.embodied_g = emb_g
        model.embodied_bounds = tuple(float(v) for v in defaults["embodied"][emb_kind])  # type: ignore[assignment]
    # The model at its point values must give the certified facility energy, hour by hour.
    expected = np.asarray(fig.facility_energy_hourly_kwh, dtype=np.float64)
    got = model.point_facility_kwh()
    if not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
        raise RuntimeError("uncertainty model does not reproduce the certified hourly facility energy")
    return (
        model,
        parts,
        power,
        gaps,
        rec.findings,
        {
            "reconciliation": rec.section,
            "pue": pue_info,
            "token_coverage": tok,
            "gap_ceiling": gaps is not gaps_estimate,
        },
    )


def _source(defaults: dict[str, Any], key: str) -> str:
    return " ".join(str((defaults.get(key) or {}).get("source", "docs/uncertainty.md")).split())


def class_widening(scheme: Scheme, defaults: dict[str, Any]) -> float:
    """Factor on every meter's uniform half-width: 1, or 1 / confidence level when the defaults say
    ``meter_class_coverage: whole_class`` (the class +-a is then the central 95 % of +-a / 0.95)."""
    assert scheme.integrity is not None
    if defaults.get("meter_class_coverage") == "whole_class":
        return 1.0 / scheme.integrity.confidence_level
    return 1.0


def _whole_class(accuracy: float, k: float) -> str:
    if k == 1.0:
        return f"uniform +-{accuracy:.1%}"
    return f"uniform +-{accuracy * k:.2%} (its central 95 % the whole class +-{accuracy:.1%})"


def _token_coverage(bundle: Bundle, scheme: Scheme) -> TokenCoverage | None:
    """Token coverage when the scheme asks for it (2026.3); below the minimum, a BundleError."""
    minimum = scheme.raw.get("data_quality", {}).get("min_token_coverage")
    term = scheme.raw.get("measurement_integrity", {}).get("token_coverage_term") is True
    if minimum is None and not term:
        return None
    m = bundle.manifest
    cov = token_coverage(
        bundle.tokens, m.period.start.timestamp(), m.period.end.timestamp(), scheme.max_gap_seconds
    )
    if minimum is not None:
        check_minimum(cov, float(minimum), bundle.tokens.file)
    return cov


def _budget_rows(
    model: Model, parts: NodeParts, power: LayerSeries, gaps: Any, extra: dict, defaults: dict, spec: Any
) -> list[tuple[str, str, str, str]]:
    """(source key, what, distribution, basis) for every source that applies to this bundle."""
    rows = [
        (
            "meter",
            f"accuracy of {power.file} ({spec.meter_class or 'meter class not declared'})",
            f"{_whole_class(power.accuracy, model.primary_accuracy / power.accuracy if power.accuracy else 1.0)}, "
            "systematic for all devices and hours",
            power.accuracy_basis,
        )
    ]
    if float(model.noise_var_kwh2.sum()) > 0:
        rows.append(
            (
                "sampling",
                f"power between readings of {power.file}",
                "normal per hour, variance from each reading's residual to its neighbours' line",
                "trapezoid error of sampled readings (docs/uncertainty.md)",
            )
        )
    if gaps.count:
        rows.append(
            (
                "gaps",
                f"{gaps.count} unbridged gap(s), {significant(gaps.device_seconds / 3600.0, 4)} device-hours",
                f"energy between {significant(gaps.low_kwh.sum(), 4)} and {significant(gaps.high_kwh.sum(), 4)} kWh (uniform)",
                (
                    f"lowest of the {defaults['gap_neighbours']} readings on each side to the device's power "
                    "ceiling (data_quality.max_device_power or the manifest's) for the whole gap; "
                    + _source(defaults, "gap_bound")
                    if extra.get("gap_ceiling")
                    else f"lowest and highest of the {defaults['gap_neighbours']} readings on each side"
                ),
            )
        )
    if model.cross_factor is not None:
        lo, hi = model.cross_factor
        rows.append(
            (
                "cross_check",
                "disagreement between two meters of the GPU layer",
                f"uniform factor between {significant(lo, 4)} and {significant(hi, 4)}",
                "the truth may lie anywhere between the two readings",
            )
        )
    if parts.basis == "estimated_ratio":
        assert parts.ratio is not None
        rows.append(
            (
                "node_parts",
                "CPU, memory, network and fans (no node meter)",
                f"node/GPU ratio uniform {parts.ratio[1]}-{parts.ratio[2]}",
                " ".join(str(defaults["node_overhead"]["source"]).split()),
            )
        )
    elif parts.basis == "node_meter":
        rows.append(
            (
                "node_parts",
                f"node meters {', '.join(parts.node_sources)}",
                f"{_whole_class(parts.node_accuracy, model.node_accuracy / parts.node_accuracy if parts.node_accuracy else 1.0)}, "
                "systematic",
                "node meter accuracy (manifest or meter class default)",
            )
        )
    if model.idle_share is not None and model.idle_uncertain and model.idle_share[2] > model.idle_share[1]:
        s0, lo, hi = model.idle_share
        rows.append(
            (
                "idle_capacity",
                "idle provisioned capacity (share of IT energy)",
                f"share uniform {significant(lo, 4)}-{significant(hi, 4)} (certified {significant(s0, 4)})",
                "boundary defaults of the scheme (compute/boundary.py)",
            )
        )
    pue_info = extra["pue"]
    rows.append(("pue", "PUE", pue_info["distribution"], pue_info["basis"]))
    counts = np.bincount(model.grid_kind, minlength=len(GRID_KINDS))
    kinds = ", ".join(
        f"{int(c)} {GRID_KINDS[i].replace('_', ' ')}(s) +-{model.grid_halfwidth[i]:.0%}"
        for i, c in enumerate(counts)
        if c
    )
    rows.append(
        (
            "grid",
            "grid intensity",
            f"uniform, one systematic factor per kind of hour: {kinds}",
            " ".join(str(defaults["grid"]["source"]).split()),
        )
    )
    tok = extra.get("token_coverage")
    if model.tokens_missing_high_mtok > 0 and tok is not None:
        rows.append(
            (
                "token_coverage",
                f"output tokens of the {len(tok.uncovered)} span(s) the counters do not cover "
                f"({significant(tok.uncovered_seconds, 4)} s, coverage {significant(tok.coverage, 4)})",
                f"uniform between 0 and {significant(tok.missing_high, 4)} tokens, one fraction for all spans",
                "where no instance counted, the time x the highest observed output-token rate summed over "
                "instances; in one instance's long step, the time x that instance's highest rate; "
                "the certified value counts none of them; " + _source(defaults, "token_coverage"),
            )
        )
    if model.embodied_g is not None:
        lo, hi = model.embodied_bounds
        rows.append(
            (
                "embodied",
                "embodied carbon (SCI M)",
                f"uniform {lo:+.0%} to {hi:+.0%}",
                " ".join(str(defaults["embodied"]["source"]).split()),
            )
        )
    return rows


def assess(
    bundle: Bundle, scheme: Scheme, fig: Any, figures: dict[str, Any], with_budget: bool = True
) -> Assessment:
    """Intervals and integrity sections for ``figures`` (the compute stage's dict, metrics included)."""
    assert scheme.integrity is not None
    defaults = load_defaults(scheme.integrity.defaults)
    mc = defaults["monte_carlo"]
    draws, seed, block, digits = (
        int(mc["draws"]),
        int(mc["seed"]),
        int(mc["block_values"]),
        int(mc["significant_digits"]),
    )
    model, parts, power, gaps, findings, extra = build_model(bundle, scheme, fig, figures, defaults)
    metrics = figures["metrics"]
    full = simulate(model, draws, seed, block, frozenset(SOURCES))
    e_point = metrics["energy_per_million_tokens"]["value"]
    c_point = metrics["carbon_per_million_tokens"]["value"]
    intervals = {
        "energy_per_million_tokens": interval95(full.energy_per_mtok, e_point, digits),
        "carbon_per_million_tokens": interval95(full.carbon_per_mtok, c_point, digits),
    }
    if "carbon_location_per_million_tokens" in metrics:
        intervals["carbon_location_per_million_tokens"] = intervals["carbon_per_million_tokens"]
    if full.sci_per_mtok is not None and "sci_per_million_tokens" in metrics:
        intervals["sci_per_million_tokens"] = interval95(
            full.sci_per_mtok, metrics["sci_per_million_tokens"]["value"], digits
        )
    if model.embodied_g is not None and "embodied_carbon_per_million_tokens" in metrics:
        lo, hi = model.embodied_bounds
        point = metrics["embodied_carbon_per_million_tokens"]["value"]
        # Central 95 % of a uniform factor on [1 + lo, 1 + hi].
        span = hi - lo
        intervals["embodied_carbon_per_million_tokens"] = interval95(
            np.array([point * (1 + lo + 0.025 * span), point * (1 + hi - 0.025 * span)]), point, digits
        )
    budget = []
    if with_budget:
        for key, what, dist, basis in _budget_rows(
            model, parts, power, gaps, extra, defaults, bundle.manifest.power
        ):
            one = simulate(model, max(2000, draws // 4), seed, block, frozenset({key}))
            row = {
                "source": key,
                "input": what,
                "distribution": dist,
                "basis": basis,
                "energy_relative95": relative_range(one.energy_per_mtok, e_point),
                "carbon_relative95": relative_range(one.carbon_per_mtok, c_point),
            }
            if key == "embodied" and one.sci_per_mtok is not None:
                row["sci_relative95"] = relative_range(
                    one.sci_per_mtok, metrics["sci_per_million_tokens"]["value"]
                )
            # A source with no effect here (the GPU meter when a node meter gives the IT energy) is left out.
            if any(
                v != 0
                for k in ("energy_relative95", "carbon_relative95", "sci_relative95")
                for v in row.get(k, [])
            ):
                budget.append(row)
    if gaps.count:
        findings.append(
            finding(
                "unbridged-gaps",
                "info",
                f"{gaps.count} gap(s) in {bundle.power.file} longer than max_gap ({significant(gaps.device_seconds / 3600.0, 4)} "
                f"device-hours): the certified value leaves their energy out, the interval includes "
                f"{significant(gaps.low_kwh.sum(), 4)}-{significant(gaps.high_kwh.sum(), 4)} kWh for them",
                gaps=gaps.count,
                device_hours=significant(gaps.device_seconds / 3600.0, 4),
            )
        )
    tok = extra["token_coverage"]
    data_quality = None
    if tok is not None:
        data_quality = {**(figures.get("data_quality") or {}), "token_coverage": round(tok.coverage, 9)}
        if tok.coverage < 1.0:
            first = first_uncovered(tok)
            findings.append(
                finding(
                    "token-coverage-partial",
                    "warning",
                    f"the output-token counters in {bundle.tokens.file} cover {tok.coverage:.2%} of the period "
                    f"({len(tok.uncovered)} uncovered span(s), first {first[0] if first else '-'} to "
                    f"{first[1] if first else '-'}): the certified value counts only the tokens counted, "
                    f"the interval allows up to {round(tok.missing_high):,} more",
                    token_coverage=round(tok.coverage, 6),
                    uncovered_seconds=significant(tok.uncovered_seconds, 6),
                    uncovered_spans=len(tok.uncovered),
                    missing_tokens_high=significant(tok.missing_high, 6),
                    max_token_rate=significant(tok.max_rate, 6),
                    per_instance={k: round(v, 6) for k, v in sorted(tok.per_instance.items())},
                )
            )
    uncertainty = {
        "method": "Monte Carlo propagation of distributions (JCGM 101:2008, GUM Supplement 1); "
        "interval = central 95 % of the draws, widened to contain the certified value, rounded outwards",
        "confidence_level": scheme.integrity.confidence_level,
        "draws": draws,
        "seed": seed,
        "defaults": {"file": scheme.integrity.defaults, "version": str(defaults["version"])},
        "intervals": {
            name: {
                "value": metrics[name]["value"],
                "interval95": iv,
                "unit": metrics[name]["unit"],
                "relative": [
                    significant(iv[0] / metrics[name]["value"] - 1.0, 4) if metrics[name]["value"] else 0.0,
                    significant(iv[1] / metrics[name]["value"] - 1.0, 4) if metrics[name]["value"] else 0.0,
                ],
            }
            for name, iv in intervals.items()
        },
        "budget": budget,
        "budget_note": "each row: the central 95 % range, relative to the certified value, with only that "
        "source uncertain; sources combine (not add) in the interval; sources with no effect are left out",
        "tokens": "output tokens are counter increases, taken as exact"
        + (
            "; tokens of spans the counters do not cover are the token_coverage source"
            if model.tokens_missing_high_mtok > 0
            else ""
        ),
    }
    regime = load_regime(bundle, fig, power_fold(bundle, scheme))
    all_findings = list(figures.get("findings") or []) + findings
    sections = {
        "uncertainty": uncertainty,
        "reconciliation": extra["reconciliation"],
        "load_regime": regime,
        "findings": all_findings,
    }
    if data_quality is not None:  # the compute stage's data_quality, with token_coverage added
        sections["data_quality"] = data_quality
    return Assessment(intervals, sections, {"it_energy_basis": parts.basis})

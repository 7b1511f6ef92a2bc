"""The certificate's carbon figures: location-based, market-based, embodied and SCI, with sources.

``carbon_report(bundle, figures)`` takes the hourly arrays the foundation's
``compute_figures`` already produced (facility energy and grid intensity per
UTC hour, output tokens) and adds:

* location-based operational carbon per Mtok (the same figure the grade uses);
* market-based carbon per Mtok (``carbon.market``), with the 24/7 CFE score
  and the annual-matching share side by side;
* embodied carbon per Mtok (``carbon.embodied``);
* the SCI score per Mtok, ((E x I) + M) / R, location-based only as
  ISO/IEC 21031:2024 requires, with components that sum to it and a
  coefficient table (value, unit, source, measured/modelled/sourced);
* marginal emissions, if the bundle has a marginal series, reported apart:
  a marginal rate answers "what does one more kWh emit", an average rate
  "what share of the grid's emissions is mine"; they are never added.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from greencert.bundle.reader import Bundle
from greencert.carbon.embodied import default_inventory, embodied_carbon
from greencert.carbon.factors import residual_mix_factor
from greencert.carbon.market import match_instruments
from greencert.carbon.models import Factor
from greencert.errors import BundleError
from greencert.units import as_array, significant

PER_MTOK = "gCO2e/Mtok"


@dataclass
class CarbonReport:
    metrics: dict[str, dict[str, Any]]
    section: dict[str, Any]
    hourly_intensity_share: float


def _bool_column(values: list[Any], where: str, column: str) -> np.ndarray:
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if isinstance(v, bool):
            out[i] = v
        elif isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", ""):
            out[i] = v.strip().lower() in ("true", "1")
        elif isinstance(v, int | float) and v in (0, 1):
            out[i] = bool(v)
        elif v is None:
            out[i] = False
        else:
            raise BundleError(f"column {column} must be true or false, got {v!r}", f"{where} line {i + 2}")
    return out


def grid_flags(bundle: Bundle, hour_bins: np.ndarray) -> dict[str, np.ndarray]:
    """Per-hour provenance flags from the grid file's optional columns (filled, is_estimated)."""
    series = bundle.grid
    n = hour_bins.size
    flags = {"filled": np.zeros(n, bool), "is_estimated": np.zeros(n, bool)}
    if series is None:
        return flags
    path = bundle.path / series.file
    wanted = ("filled", "is_estimated", "emission_factor_type")
    if series.file_format == "csv":
        import pyarrow.csv as pacsv

        header = path.open(encoding="utf-8").readline().strip().lstrip("\ufeff")
        names = [c.strip().strip('"') for c in header.split(",")]
        present = [c for c in wanted if c in names]
        if not present:
            return flags
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                include_columns=["timestamp", *present],
                column_types=dict.fromkeys(present, pa.string()),
                strings_can_be_null=True,
            ),
        )
    else:
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        present = [c for c in wanted if c in names]
        if not present:
            return flags
        table = pq.read_table(path, columns=present)
    # Rows are in file order; series.t is in file order too (one group), so align by time.
    order = np.argsort(series.t, kind="stable")
    pos = np.searchsorted(series.t[order], hour_bins)
    pos = order[np.minimum(pos, series.t.size - 1)]
    for name in ("filled", "is_estimated"):
        if name in present:
            col = _bool_column(table.column(name).to_pylist(), series.file, name)
            flags[name] = col[pos]
    if "emission_factor_type" in present:
        kinds = sorted({str(v) for v in table.column("emission_factor_type").to_pylist() if v})
        flags["emission_factor_types"] = np.array(kinds, dtype=object)
    return flags


def _marginal(bundle: Bundle, hour_bins: np.ndarray, facility_kwh: np.ndarray, mtok: float) -> dict | None:
    spec = bundle.manifest.carbon.marginal if bundle.manifest.carbon else None
    if spec is None:
        return None
    series = bundle.carbon_series[spec.file]
    pos = np.minimum(np.searchsorted(series.t, hour_bins), series.t.size - 1)
    missing = series.t[pos] != hour_bins
    if missing.any():
        first = float(hour_bins[int(np.argmax(missing))])
        raise BundleError(
            f"marginal series has no rate for {int(missing.sum())} hour(s) of the period, "
            f"first {np.datetime64(int(first), 's')}Z",
            series.file,
        )
    rate = as_array(series.values["rate"][pos], spec.unit).to("gCO2e/kWh").magnitude
    total = float(np.sum(as_array(facility_kwh, "kWh") * as_array(rate, "gCO2e/kWh")).to("gCO2e").magnitude)
    return {
        "kind": "marginal",
        "signal": spec.signal,
        "source": spec.source,
        "emissions": {"value": significant(total), "unit": "gCO2e"},
        "per_million_tokens": {"value": significant(total / mtok), "unit": PER_MTOK},
        "mean_rate": {
            "value": significant(total / facility_kwh.sum()) if facility_kwh.sum() > 0 else 0.0,
            "unit": "gCO2e/kWh",
        },
        "note": "marginal operating emission rate: for decisions about shifting load, "
        "not an attributional figure; never added to or averaged with location- or market-based figures",
    }


def carbon_report(bundle: Bundle, fig: Any) -> CarbonReport:
    m = bundle.manifest
    spec = m.carbon
    edges = np.concatenate([fig.hour_starts, [m.period.end.timestamp()]])
    hour_bins = np.floor(fig.hour_starts / 3600.0) * 3600.0
    facility = np.asarray(fig.facility_energy_hourly_kwh, dtype=np.float64)
    intensity = np.asarray(fig.intensity_hourly, dtype=np.float64)
    energy = float(facility.sum())
    mtok = float(fig.output_tokens.to("Mtok").magnitude)
    period_s = m.period.seconds

    # Location-based: the foundation's hourly sum (sum_h E_h x I_h); the grade uses this figure.
    location_g = float(fig.operational_carbon.to("gCO2e").magnitude)

    # Share of facility energy whose intensity is a genuine hourly value (not annual, not filled).
    flags = grid_flags(bundle, hour_bins)
    if fig.grid_basis == "annual":
        hourly_share = 0.0
        filled_hours = 0
    else:
        genuine = ~flags["filled"]
        hourly_share = float(facility[genuine].sum() / energy) if energy > 0 else float(genuine.mean())
        filled_hours = int(flags["filled"].sum())
    estimated_share = float(facility[flags["is_estimated"]].sum() / energy) if energy > 0 else 0.0

    # Market-based.
    default_residual = None
    if (spec is None or spec.residual_mix is None) and m.grid.zone:
        for key in (m.grid.zone, m.grid.zone.split("-")[0]):
            found = residual_mix_factor(key)
            if found is not None:
                default_residual = Factor.model_validate(found.as_factor())
                break
    market = match_instruments(edges, facility, intensity, spec, bundle.carbon_series, default_residual)

    # Embodied (SCI M).
    notes: list[str]
    if spec is not None and spec.embodied is not None and spec.embodied.hardware:
        items, basis, notes = list(spec.embodied.hardware), "declared inventory", []
    else:
        gpus = m.scope.gpu_count or fig.devices or 1
        profile = spec.embodied.profile if spec is not None and spec.embodied is not None else None
        items, basis, notes = default_inventory(gpus, m.scope.gpu_type, profile)
    emb = embodied_carbon(items, period_s, "manifest.yaml carbon.embodied.hardware")
    emb.basis, emb.notes = basis, notes

    loc_per = location_g / mtok
    mkt_per = market.market_carbon_g / mtok
    emb_per = emb.total_g / mtok
    # The score is the exact decimal sum of the published (rounded) components, so they add up to it.
    sci = float(Decimal(repr(significant(loc_per))) + Decimal(repr(significant(emb_per))))

    def metric(value: float, unit: str) -> dict[str, Any]:
        return {"value": significant(value), "unit": unit}

    metrics = {
        "carbon_location_per_million_tokens": metric(loc_per, PER_MTOK),
        "carbon_market_per_million_tokens": metric(mkt_per, PER_MTOK),
        "embodied_carbon_per_million_tokens": metric(emb_per, PER_MTOK),
        "sci_per_million_tokens": {"value": sci, "unit": PER_MTOK},
        "cfe_hourly_share": metric(market.cfe_hourly_share, "fraction"),
        "annual_match_share": metric(market.annual_match_share, "fraction"),
        "hourly_intensity_share": metric(hourly_share, "fraction"),
    }

    mean_i = location_g / energy if energy > 0 else 0.0
    pue_tag = "measured" if fig.pue_basis == "measured" else "sourced"
    grid_tag = "sourced"
    grid_source = m.grid.source or ("hourly grid file" if m.grid.file else "annual factor")
    idle = getattr(fig, "idle_capacity", None)
    if idle is not None and not float(fig.idle_capacity_energy.to("kWh").magnitude) > 0:
        idle = None  # every provisioned device metered: E is IT energy x PUE
    coefficients = [
        {
            "symbol": "E",
            # 2026.3+: idle provisioned capacity is IT equipment too (docs/boundary.md); older schemes keep
            # their wording so their certificates recompute byte for byte.
            "name": "facility energy ((IT energy + idle provisioned capacity) x PUE)"
            if idle is not None
            else "facility energy (IT energy x PUE)",
            "value": significant(energy),
            "unit": "kWh",
            "source": f"metered IT power ({m.power.file}, {m.power.kind}) x PUE ({fig.pue_basis})"
            if idle is None
            else f"metered IT power ({m.power.file}, {m.power.kind}) + idle provisioned capacity "
            f"({idle.basis}) x PUE ({fig.pue_basis})",
            "tag": "measured" if fig.pue_basis == "measured" else "modelled",
        },
        {
            "symbol": "IT",
            "name": "IT energy",
            "value": significant(float(fig.it_energy.to("kWh").magnitude)),
            "unit": "kWh",
            "source": f"{m.power.file}",
            "tag": "measured",
        },
        *(
            [
                {
                    "symbol": "IDLE",
                    "name": "idle provisioned capacity",
                    "value": significant(float(fig.idle_capacity_energy.to("kWh").magnitude)),
                    "unit": "kWh",
                    "source": idle.source,
                    "tag": "modelled" if idle.basis == "estimated" else "sourced",
                }
            ]
            if idle is not None
            else []
        ),
        {
            "symbol": "PUE",
            "name": "power usage effectiveness",
            "value": significant(fig.pue),
            "unit": "1",
            "source": "facility and IT meters" if fig.pue_basis == "measured" else "declared in the manifest",
            "tag": pue_tag,
        },
        {
            "symbol": "I",
            "name": "location-based grid intensity, energy-weighted over the period",
            "value": significant(mean_i),
            "unit": "gCO2e/kWh",
            "source": f"{grid_source} ({'annual factor' if fig.grid_basis == 'annual' else 'hourly'})",
            "tag": grid_tag,
        },
        {
            "symbol": "M",
            "name": "embodied emissions amortised over the period",
            "value": significant(emb.total_g),
            "unit": "gCO2e",
            "source": f"{basis}: sum of TE x TS x RS (see carbon.embodied)",
            "tag": "sourced",
        },
        {
            "symbol": "R",
            "name": "output tokens",
            "value": significant(mtok),
            "unit": "Mtok",
            "source": f"{m.tokens.file} (counter increase)",
            "tag": "measured",
        },
    ]
    if fig.grid_basis == "annual":
        grid_note = (
            f"computed from an ANNUAL grid factor ({m.grid.annual} {m.grid.unit}, "
            f"{m.grid.source or 'source not given'}, year {m.grid.year or 'not given'}): "
            "no hourly variation is reflected (SCI accepts annual data as the coarsest granularity)"
        )
    else:
        grid_note = (
            f"hourly grid intensity; {filled_hours} hour(s) filled by the documented rule, "
            f"{significant(estimated_share)} of energy in hours the source marked as estimated"
        )
    section: dict[str, Any] = {
        "method": "GHG Protocol Scope 2 dual reporting (location-based and market-based side by side); "
        "SCI (ISO/IEC 21031:2024) per million output tokens, location-based",
        "location_based": {
            "emissions": metric(location_g, "gCO2e"),
            "per_million_tokens": metric(loc_per, PER_MTOK),
            "grid_basis": fig.grid_basis,
            "grid_source": grid_source,
            "grid_year": m.grid.year,
            "grid_zone": m.grid.zone,
            "hourly_intensity_share": significant(hourly_share),
            "filled_hours": filled_hours,
            "estimated_energy_share": significant(estimated_share),
            "note": grid_note,
            "used_for_grade": True,
        },
        "market_based": {
            "emissions": metric(market.market_carbon_g, "gCO2e"),
            "per_million_tokens": metric(mkt_per, PER_MTOK),
            "matched_energy": metric(float(market.matched_kwh.sum()), "kWh"),
            "cfe_hourly_share": significant(market.cfe_hourly_share),
            "annual_match_share": significant(market.annual_match_share),
            "instruments": market.instruments,
            "residual_mix": {
                "basis": market.residual.basis,
                "value": market.residual.value,
                "unit": market.residual.unit,
                "source": market.residual.source,
            },
            "notes": market.notes,
            "used_for_grade": False,
        },
        "embodied": {
            "emissions": metric(emb.total_g, "gCO2e"),
            "per_million_tokens": metric(emb_per, PER_MTOK),
            "basis": emb.basis,
            "items": emb.items,
            "notes": emb.notes,
        },
        "sci": {
            "score": {"value": sci, "unit": PER_MTOK},
            "formula": "SCI = ((E x I) + M) / R, I location-based (market instruments excluded)",
            "functional_unit": "R = one million output tokens (Mtok)",
            "components": [
                {"name": "operational (E x I) / R", **metric(loc_per, PER_MTOK)},
                {"name": "embodied M / R", **metric(emb_per, PER_MTOK)},
            ],
            "coefficients": coefficients,
            "period": {"start": m.period.start.isoformat(), "end": m.period.end.isoformat()},
            "software": {
                k: v
                for k, v in {
                    "model": m.scope.model,
                    "serving_engine": m.scope.serving_engine,
                    "engine_version": m.scope.engine_version,
                    "precision": m.scope.precision,
                }.items()
                if v is not None
            },
        },
    }
    if "emission_factor_types" in flags:
        section["location_based"]["emission_factor_types"] = [str(k) for k in flags["emission_factor_types"]]
    marginal = _marginal(bundle, hour_bins, facility, mtok)
    if marginal is not None:
        section["marginal"] = marginal
    return CarbonReport(metrics, section, hourly_share)

"""Market-based Scope 2 carbon: contractual instruments matched to hourly consumption.

GHG Protocol Scope 2 dual reporting: the location-based figure (grid average,
hour by hour) and the market-based figure (contractual instruments, residual
mix for the rest) are reported side by side.

Matching, most specific first, each instrument only inside its validity window:

1. ``hourly`` instruments (delivery profile per UTC hour): matched in the same
   hour only, ``min(consumption, delivery)``; surplus in one hour is lost,
   it never covers another hour (24/7 carbon-free energy accounting).
2. ``monthly`` instruments: the time-proportional share of the volume for the
   part of each calendar month (UTC) the period covers, matched against that
   month's remaining consumption.
3. ``annual`` instruments: the time-proportional share of the volume for the
   whole period, matched against the remaining consumption.

Pooled matches (2, 3) are spread over the pool's hours in proportion to each
hour's remaining consumption. Unmatched consumption is multiplied by the
residual mix (declared, else the packaged default for the zone, else the
location-based grid average of the same hour, as the Scope 2 Guidance
allows when no residual mix exists; the report says which).

Two shares tell a buyer the difference between hourly and annual claims:

* ``cfe_hourly_share``: consumption matched, in the same hour, by carbon-free
  instruments that carry hourly data, over total consumption (the 24/7 CFE
  score counting contracted supply only, not the grid's own carbon-free share);
* ``annual_match_share``: carbon-free volume credited to the period, whatever
  its timing, over total consumption, capped at 1.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greencert.bundle.reader import Series
from greencert.carbon.models import CarbonSpec, Factor, Instrument
from greencert.times import stamp
from greencert.units import Q_, as_array, significant

MWH = 1000.0  # kWh per MWh, for report figures only


@dataclass
class Residual:
    g_per_kwh: np.ndarray  # per hour
    basis: str  # declared | default | location-based fallback
    value: float | None
    unit: str
    source: str


@dataclass
class MarketResult:
    market_carbon_g: float
    matched_kwh: np.ndarray
    cfe_hourly_kwh: np.ndarray
    cfe_hourly_share: float
    annual_match_share: float
    residual: Residual
    instruments: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _overlap(a0: np.ndarray, a1: np.ndarray, b0: float, b1: float) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def _g_per_kwh(factor: Factor) -> float:
    return float(Q_(factor.value, factor.unit).to("gCO2e/kWh").magnitude)


def _hourly_supply(inst: Instrument, series: Series, edges: np.ndarray) -> np.ndarray:
    """kWh delivered in each hour bin of the period (partial bins and window edges pro-rated)."""
    energy_kwh = as_array(series.values["energy"], inst.profile_unit).to("kWh").magnitude
    bins = np.floor(edges[:-1] / 3600.0) * 3600.0
    pos = np.searchsorted(series.t, bins)
    pos_c = np.minimum(pos, series.t.size - 1)
    hit = series.t[pos_c] == bins
    per_hour = np.where(hit, energy_kwh[pos_c], 0.0)
    # Share of the clock hour that lies inside both the period bin and the validity window.
    inside = _overlap(edges[:-1], edges[1:], inst.valid_from.timestamp(), inst.valid_to.timestamp())
    return per_hour * inside / 3600.0


def _pool_match(remaining: np.ndarray, eligible_frac: np.ndarray, supply: float) -> tuple[np.ndarray, float]:
    """Match ``supply`` against the eligible part of ``remaining``, spread in proportion."""
    eligible = remaining * eligible_frac
    total = float(eligible.sum())
    if total <= 0 or supply <= 0:
        return np.zeros_like(remaining), 0.0
    matched_total = min(total, supply)
    return eligible * (matched_total / total), matched_total


def _months(start: float, end: float) -> list[tuple[float, float]]:
    """UTC calendar months overlapping [start, end), clipped to it."""
    out = []
    t = dt.datetime.fromtimestamp(start, dt.UTC)
    cursor = dt.datetime(t.year, t.month, 1, tzinfo=dt.UTC)
    while cursor.timestamp() < end:
        nxt = dt.datetime(cursor.year + cursor.month // 12, cursor.month % 12 + 1, 1, tzinfo=dt.UTC)
        out.append((max(start, cursor.timestamp()), min(end, nxt.timestamp())))
        cursor = nxt
    return out


def resolve_residual(
    spec: CarbonSpec | None, default: Factor | None, location_g_per_kwh: np.ndarray
) -> Residual:
    n = location_g_per_kwh.size
    if spec is not None and spec.residual_mix is not None:
        f = spec.residual_mix
        return Residual(np.full(n, _g_per_kwh(f)), "declared", f.value, f.unit, f.source)
    if default is not None:
        return Residual(
            np.full(n, _g_per_kwh(default)), "default", default.value, default.unit, default.source
        )
    return Residual(
        location_g_per_kwh.copy(),
        "location-based fallback",
        None,
        "gCO2e/kWh",
        "no residual mix declared or known for the zone: grid average of each hour used "
        "(GHG Protocol Scope 2 Guidance fallback; may double count attributes claimed by others)",
    )


def match_instruments(
    edges: np.ndarray,
    facility_kwh: np.ndarray,
    location_g_per_kwh: np.ndarray,
    spec: CarbonSpec | None,
    carbon_series: dict[str, Series],
    residual_default: Factor | None = None,
) -> MarketResult:
    """Market-based carbon and matching shares for hourly facility energy (see module doc)."""
    start, end = float(edges[0]), float(edges[-1])
    total = float(facility_kwh.sum())
    remaining = facility_kwh.astype(np.float64).copy()
    matched = np.zeros_like(remaining)
    cfe_hourly = np.zeros_like(remaining)
    instrument_carbon = 0.0
    carbon_free_credit = 0.0
    reports: list[dict[str, Any]] = []
    notes: list[str] = []
    instruments = list(spec.instruments) if spec is not None else []
    order = {"hourly": 0, "monthly": 1, "annual": 2}
    # sorted() is stable: declaration order is kept within a kind.
    for inst in sorted(instruments, key=lambda i: order[i.matching]):
        w0, w1 = inst.valid_from.timestamp(), inst.valid_to.timestamp()
        ef = _g_per_kwh(inst.emission_factor) if inst.emission_factor is not None else 0.0
        if inst.matching == "hourly":
            assert inst.profile_file is not None  # Instrument's validator: hourly matching names its profile
            supply = _hourly_supply(inst, carbon_series[inst.profile_file], edges)
            got = np.minimum(remaining, supply)
            available = float(supply.sum())
            if inst.is_carbon_free:
                cfe_hourly += got
        else:
            window = w1 - w0
            # Instrument's validator: monthly and annual matching need a volume.
            assert inst.volume is not None
            volume_kwh = float(Q_(inst.volume).to("kWh").magnitude)
            frac = _overlap(edges[:-1], edges[1:], w0, w1) / np.diff(edges)
            got = np.zeros_like(remaining)
            available = 0.0
            pools = _months(start, end) if inst.matching == "monthly" else [(start, end)]
            for p0, p1 in pools:
                share = float(_overlap(np.array([p0]), np.array([p1]), w0, w1)[0]) / window
                supply_pool = volume_kwh * share
                in_pool = _overlap(edges[:-1], edges[1:], p0, p1) / np.diff(edges)
                part, _ = _pool_match(remaining - got, frac * in_pool, supply_pool)
                got += part
                available += supply_pool
        remaining -= got
        matched += got
        instrument_carbon += float(got.sum()) * ef
        if inst.is_carbon_free:
            carbon_free_credit += available
        if w1 <= start or w0 >= end:
            notes.append(
                f"instrument {inst.id} is not valid in the period (window {inst.valid_from} to {inst.valid_to})"
            )
        reports.append(
            {
                "id": inst.id,
                "type": inst.type,
                "matching": inst.matching,
                "carbon_free": inst.is_carbon_free,
                "valid_from": stamp(inst.valid_from),
                "valid_to": stamp(inst.valid_to),
                "available_in_period_mwh": significant(available / MWH),
                "matched_mwh": significant(float(got.sum()) / MWH),
                "unused_mwh": significant(max(available - float(got.sum()), 0.0) / MWH),
                "emission_factor": {"value": significant(ef), "unit": "gCO2e/kWh"},
                "source": inst.source,
                **({"registry_ref": inst.registry_ref} if inst.registry_ref else {}),
                **({"profile_file": inst.profile_file} if inst.profile_file else {}),
                "tag": "sourced",
            }
        )
    residual = resolve_residual(spec, residual_default, location_g_per_kwh)
    residual_carbon = float(
        np.sum(as_array(remaining, "kWh") * as_array(residual.g_per_kwh, "gCO2e/kWh")).to("gCO2e").magnitude
    )
    return MarketResult(
        market_carbon_g=instrument_carbon + residual_carbon,
        matched_kwh=matched,
        cfe_hourly_kwh=cfe_hourly,
        cfe_hourly_share=float(cfe_hourly.sum() / total) if total > 0 else 0.0,
        annual_match_share=min(1.0, carbon_free_credit / total) if total > 0 else 0.0,
        residual=residual,
        instruments=reports,
        notes=notes,
    )

"""A longer period's sections from the figures of its days (docs/methodology.md, "Months").

A month certificate states everything a daily one does: carbon (location, market,
embodied, SCI), cross-checks, reconciliation, load regime, boundary, water,
figures per query and 95 % intervals. Each is combined from the days' figures
documents (carried in the day partials) by one of three rules, never by
averaging ratios:

* **additive** quantities (energies, emissions, tokens, queries, litres, hours)
  are summed with ``math.fsum``;
* **ratios** are recomputed from the summed numerator and denominator. A figure
  per million tokens is ``sum(value_day x Mtok_day) / sum(Mtok_day)``, which is
  the period's numerator over its tokens exactly; per 1,000 queries likewise
  with queries; an energy share is weighted by facility energy;
* **95 % intervals** are combined comonotonically: the 2.5 % and 97.5 %
  quantiles of a sum of fully correlated day totals are the sums of the days'
  quantiles (a quantile of a sum of comonotone variables is the sum of their
  quantiles). The sources that dominate the budgets (meter class, PUE, idle
  capacity share, grid factors, embodied defaults) are the same draw every day,
  so the rule is exact for them; for the day-to-day independent ones (gap
  fill) it overstates the width, never understates it.

Order statistics (concurrency percentiles) do not combine: the period states
the highest daily value and says so. A section present on some days only is
not stated for the period (a figure over part of it would read as the whole);
a finding says which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from greencert.units import significant

# Units of the certificate's metrics, by how a period combines them.
_ADDITIVE_UNITS = {"kWh", "Wh", "gCO2e", "kgCO2e", "token", "query", "L"}
_PER_MTOK = "/Mtok"
_PER_KQUERY = "/kquery"


@dataclass(frozen=True)
class Weights:
    """The denominators of the days' ratios (one per day, in day order)."""

    mtok: list[float]
    kquery: list[float] | None
    facility_kwh: list[float]
    seconds: list[float]


def _fsum(values: Iterable[float]) -> float:
    return math.fsum(float(v) for v in values)


def _weighted(values: list[float], weights: list[float]) -> float | None:
    total = _fsum(weights)
    if total <= 0:
        return None
    return _fsum(v * w for v, w in zip(values, weights, strict=True)) / total


def _q(value: float | None, unit: str, digits: int = 12) -> dict[str, Any]:
    return {"unit": unit, "value": None if value is None else significant(value, digits)}


def _value(doc: Any) -> float:
    return float(doc["value"]) if isinstance(doc, dict) else float(doc)


def _same(values: list[Any]) -> Any:
    """The days' common value, or ``"mixed"`` (texts) / the last one (structures) when they differ."""
    first = values[0]
    if all(v == first for v in values[1:]):
        return first
    return "mixed" if isinstance(first, str) else values[-1]


def weights_of(days: list[dict[str, Any]]) -> Weights:
    from greencert.times import to_utc

    def metric(day: dict[str, Any], name: str) -> float | None:
        m = day["metrics"].get(name)
        return None if m is None else float(m["value"])

    kquery = [metric(d, "requests") for d in days]
    return Weights(
        mtok=[float(d["metrics"]["output_tokens"]["value"]) / 1e6 for d in days],
        kquery=None if any(q is None for q in kquery) else [float(q or 0.0) / 1e3 for q in kquery],
        facility_kwh=[float(d["metrics"]["facility_energy"]["value"]) for d in days],
        seconds=[(to_utc(d["period"]["end"]) - to_utc(d["period"]["start"])).total_seconds() for d in days],
    )


# ----------------------------------------------------------------------------- metrics


def combine_metric(name: str, docs: list[dict[str, Any]], w: Weights) -> dict[str, Any] | None:
    """One metric of the period from its daily values, by its unit (None: the metric cannot be combined)."""
    unit = docs[0]["unit"]
    if any(d["unit"] != unit for d in docs):
        return None
    values = [float(d["value"]) for d in docs]
    out: dict[str, Any]
    if unit in _ADDITIVE_UNITS:
        out = {"unit": unit, "value": significant(_fsum(values))}
    elif unit.endswith(_PER_MTOK):
        out = _ratio(values, w.mtok, unit)
    elif unit.endswith(_PER_KQUERY):
        if w.kquery is None:
            return None
        out = _ratio(values, w.kquery, unit)
    elif unit == "fraction":
        share = _weighted(values, w.facility_kwh)
        out = {"unit": unit, "value": None if share is None else significant(share)}
    else:
        return None
    if all("interval95" in d for d in docs) and unit.endswith(_PER_MTOK):
        out["interval95"] = comonotone_interval([d["interval95"] for d in docs], w.mtok)
    return out


def _ratio(values: list[float], weights: list[float], unit: str) -> dict[str, Any]:
    total = _weighted(values, weights)
    return {"unit": unit, "value": None if total is None else significant(total)}


def comonotone_interval(intervals: list[list[float]], weights: list[float]) -> list[float]:
    """The period's 95 % interval of a ratio whose day totals are fully correlated (module docstring).

    Day totals are ``value x weight`` (weights exact: token or query counts); their quantiles add.
    Rounded to 4 significant digits, as the days' intervals are.
    """
    total = _fsum(weights)
    lo = _fsum(i[0] * w for i, w in zip(intervals, weights, strict=True)) / total
    hi = _fsum(i[1] * w for i, w in zip(intervals, weights, strict=True)) / total
    return [significant(lo, 4), significant(hi, 4)]


def combine_metrics(
    days: list[dict[str, Any]], w: Weights, headline: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every metric the days share; ``headline`` (exact, from the hourly sums) overrides the combined values.

    Returns the metrics and the names of those present on some days only (not stated).
    """
    names = [set(d["metrics"]) for d in days]
    common = set.intersection(*names)
    partial = sorted(set.union(*names) - common)
    metrics: dict[str, dict[str, Any]] = {}
    for name in sorted(common):
        combined = combine_metric(name, [d["metrics"][name] for d in days], w)
        if combined is not None:
            metrics[name] = combined
    for name, figure in headline.items():
        metrics[name] = {**metrics.get(name, {}), **figure}
    return metrics, partial


# ----------------------------------------------------------------------------- sections


def _sum_quantities(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"unit": docs[0]["unit"], "value": significant(_fsum(_value(d) for d in docs))}


def _per_mtok(total: float, w: Weights, unit: str) -> dict[str, Any]:
    mtok = _fsum(w.mtok)
    return _q(total / mtok if mtok > 0 else None, unit)


def _carbon(sections: list[dict[str, Any]], w: Weights, period: dict[str, str]) -> dict[str, Any]:
    days = sections
    out: dict[str, Any] = {"method": _same([s.get("method") for s in sections])}
    loc = [s["location_based"] for s in sections]
    loc_g = _fsum(_value(s["emissions"]) for s in loc)
    location = dict(loc[-1])
    location.update(
        {
            "emissions": _q(loc_g, "gCO2e"),
            "per_million_tokens": _per_mtok(loc_g, w, "gCO2e/Mtok"),
            "filled_hours": int(sum(int(s.get("filled_hours") or 0) for s in loc)),
            "grid_basis": _same([s.get("grid_basis") for s in loc]),
            "grid_source": _same([s.get("grid_source") for s in loc]),
            "note": f"sum of {len(days)} days' location-based emissions (hour by hour within each day)",
        }
    )
    for share in ("estimated_energy_share", "hourly_intensity_share"):
        if all(share in s for s in loc):
            location[share] = significant(_weighted([float(s[share]) for s in loc], w.facility_kwh) or 0.0)
    out["location_based"] = location
    if all("market_based" in s for s in sections):
        mkt = [s["market_based"] for s in sections]
        mkt_g = _fsum(_value(s["emissions"]) for s in mkt)
        market = dict(mkt[-1])
        market.update(
            {
                "emissions": _q(mkt_g, "gCO2e"),
                "per_million_tokens": _per_mtok(mkt_g, w, "gCO2e/Mtok"),
                "instruments": _unique(i for s in mkt for i in s.get("instruments") or []),
                "notes": _unique(n for s in mkt for n in s.get("notes") or []),
            }
        )
        if all("matched_energy" in s for s in mkt):
            market["matched_energy"] = _sum_quantities([s["matched_energy"] for s in mkt])
        for share in ("annual_match_share", "cfe_hourly_share"):
            if all(share in s for s in mkt):
                market[share] = significant(_weighted([float(s[share]) for s in mkt], w.facility_kwh) or 0.0)
        out["market_based"] = market
    emb_g = 0.0
    if all("embodied" in s for s in sections):
        emb = [s["embodied"] for s in sections]
        emb_g = _fsum(_value(s["emissions"]) for s in emb)
        embodied = dict(emb[-1])
        embodied.update(
            {
                "emissions": _q(emb_g, "gCO2e"),
                "per_million_tokens": _per_mtok(emb_g, w, "gCO2e/Mtok"),
                "items": _embodied_items([s.get("items") or [] for s in emb]),
                "notes": _unique(n for s in emb for n in s.get("notes") or []),
            }
        )
        out["embodied"] = embodied
    if all("sci" in s for s in sections):
        out["sci"] = _sci([s["sci"] for s in sections], loc_g, emb_g, w, period)
    return out


def _embodied_items(days: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each item's amortised emissions and time share summed over the days (same hardware every day)."""
    first = days[-1]
    keyed = [{item["item"]: item for item in items} for items in days]
    out = []
    for item in first:
        same = [k.get(item["item"]) for k in keyed]
        if any(s is None for s in same):
            out.append(item)
            continue
        merged = dict(item)
        merged["m"] = _sum_quantities([s["m"] for s in same if s is not None])
        if all("time_share" in s for s in same if s is not None):
            merged["time_share"] = significant(_fsum(float(s["time_share"]) for s in same if s is not None))
        out.append(merged)
    return out


def _sci(
    days: list[dict[str, Any]], loc_g: float, emb_g: float, w: Weights, period: dict[str, str]
) -> dict[str, Any]:
    sci = dict(days[-1])
    by_symbol = [{c["symbol"]: c for c in d.get("coefficients") or []} for d in days]
    coefficients = []
    mtok = _fsum(w.mtok)
    for coef in days[-1].get("coefficients") or []:
        symbol = coef["symbol"]
        values = [float(b[symbol]["value"]) for b in by_symbol if symbol in b]
        merged = dict(coef)
        if len(values) != len(days):
            coefficients.append(merged)
            continue
        if symbol == "I":  # energy-weighted intensity over the period: sum(E x I) / sum(E)
            merged["value"] = significant(_weighted(values, w.facility_kwh) or 0.0)
        elif symbol == "PUE":
            facility = _fsum(w.facility_kwh)
            it = _fsum(
                float(b["IT"]["value"]) + float(b.get("IDLE", {}).get("value", 0.0)) for b in by_symbol
            )
            merged["value"] = significant(facility / it) if it > 0 else merged["value"]
        else:  # E, IT, IDLE, M, R: additive
            merged["value"] = significant(_fsum(values))
        coefficients.append(merged)
    sci["coefficients"] = coefficients
    sci["components"] = [
        {"name": "operational (E x I) / R", "unit": "gCO2e/Mtok", "value": significant(loc_g / mtok)},
        {"name": "embodied M / R", "unit": "gCO2e/Mtok", "value": significant(emb_g / mtok)},
    ]
    sci["score"] = _q((loc_g + emb_g) / mtok, "gCO2e/Mtok")
    sci["period"] = {"start": period["start"], "end": period["end"]}
    return sci


def _unique(items: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for item in items:
        seen.setdefault(json.dumps(item, sort_keys=True), item)
    return list(seen.values())


def _crosschecks(days: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per check and meter: compared on every day, the worst day's difference, the days outside tolerance."""
    out = []
    for check in days[-1]:
        key = (check.get("check"), check.get("meter"), check.get("layer"))
        same = [c for d in days for c in d if (c.get("check"), c.get("meter"), c.get("layer")) == key]
        merged = dict(check)
        merged["days"] = len(same)
        merged["days_failed"] = sum(1 for c in same if not c.get("passed"))
        merged["passed"] = len(same) == len(days) and all(c.get("passed") for c in same)
        for name in ("devices_compared", "devices_outside_tolerance"):
            if name in check:
                merged[name] = max(int(c.get(name) or 0) for c in same)
        if "max_abs_relative_difference" in check:
            merged["max_abs_relative_difference"] = max(float(c["max_abs_relative_difference"]) for c in same)
        for name in ("devices_without_meter", "devices_without_power"):
            if name in check:
                merged[name] = sorted({x for c in same for x in c.get(name) or []})
        out.append(merged)
    return out


def _reconciliation(days: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(days[-1])
    layers = []
    for layer in days[-1].get("layers") or []:
        same = [x for d in days for x in d.get("layers") or [] if x.get("source") == layer.get("source")]
        merged = dict(layer)
        if len(same) == len(days):
            merged["energy_kwh"] = significant(_fsum(float(x["energy_kwh"]) for x in same), 6)
        layers.append(merged)
    out["layers"] = layers
    checks = []
    for check in days[-1].get("checks") or []:
        key = (check.get("check"), tuple(check.get("sources") or ()))
        same = [
            c
            for d in days
            for c in d.get("checks") or []
            if (c.get("check"), tuple(c.get("sources") or ())) == key
        ]
        merged = dict(check)
        merged["days"] = len(same)
        merged["passed"] = len(same) == len(days) and all(c.get("passed") for c in same)
        if len(same) == len(days) and all(len(c.get("energy_kwh") or []) == 2 for c in same):
            a = _fsum(float(c["energy_kwh"][0]) for c in same)
            b = _fsum(float(c["energy_kwh"][1]) for c in same)
            merged["energy_kwh"] = [significant(a, 6), significant(b, 6)]
            if "relative_difference" in check and a > 0:
                merged["relative_difference"] = significant((b - a) / a, 4)
            if "outer_to_inner_ratio" in check and a > 0:
                merged["outer_to_inner_ratio"] = significant(b / a, 4)
        for name in ("hours", "hours_violated"):
            if name in check:
                merged[name] = int(sum(int(c.get(name) or 0) for c in same))
        checks.append(merged)
    out["checks"] = checks
    parts = [d.get("unmetered_node_parts") for d in days]
    if all(isinstance(p, dict) for p in parts):
        merged_parts = dict(parts[-1] or {})
        if all("added_kwh" in (p or {}) for p in parts):
            merged_parts["added_kwh"] = significant(_fsum(float((p or {})["added_kwh"]) for p in parts), 6)
        out["unmetered_node_parts"] = merged_parts
    return out


def _load_regime(days: list[dict[str, Any]], w: Weights, metrics: dict[str, Any]) -> dict[str, Any]:
    out = dict(days[-1])
    seconds = _fsum(w.seconds)
    tokens = [d.get("tokens") or {} for d in days]
    if all("output" in t and "input" in t for t in tokens):
        out_tok = _fsum(float(t["output"]) for t in tokens)
        in_tok = _fsum(float(t["input"]) for t in tokens)
        merged_tokens = dict(tokens[-1])
        merged_tokens.update(
            {
                "output": round(out_tok),
                "input": round(in_tok),
                "input_per_output": significant(in_tok / out_tok, 4) if out_tok > 0 else None,
                "output_per_second": significant(out_tok / seconds, 6) if seconds > 0 else None,
            }
        )
        if all("by_type" in t for t in tokens):
            merged_tokens["by_type"] = _sum_by_type([t["by_type"] for t in tokens])
        else:
            merged_tokens.pop("by_type", None)
        out["tokens"] = merged_tokens
    conc = [d.get("concurrency") for d in days]
    if all(isinstance(c, dict) and c.get("available") is False for c in conc):
        out["concurrency"] = conc[-1]  # not metered on any day: the days' statement stands
    elif all(isinstance(c, dict) and "mean" in c and "max" in c for c in conc):
        cs = [c for c in conc if isinstance(c, dict)]
        merged_c = dict(cs[-1])
        merged_c["mean"] = significant(_weighted([float(c["mean"]) for c in cs], w.seconds) or 0.0, 4)
        merged_c["max"] = max(float(c["max"]) for c in cs)
        for p in ("p50", "p90", "p99"):
            if all(p in c for c in cs):
                merged_c[p] = max(float(c[p]) for c in cs)
        merged_c["percentiles"] = "highest daily value (percentiles of days do not combine)"
        merged_c["coverage"] = significant(
            _weighted([float(c.get("coverage") or 0) for c in cs], w.seconds) or 0.0, 6
        )
        out["concurrency"] = merged_c
    else:
        out.pop("concurrency", None)
    idle = [d.get("idle") for d in days]
    if all(isinstance(i, dict) for i in idle):
        items = [i for i in idle if isinstance(i, dict)]
        merged_i = dict(items[-1])
        idle_kwh = _fsum(_value(i["energy"]) for i in items)
        merged_i["energy"] = {"unit": "kWh", "value": significant(idle_kwh, 6)}
        facility = float(metrics["facility_energy"]["value"])
        merged_i["share_of_energy"] = significant(idle_kwh / facility, 4) if facility > 0 else None
        merged_i["share_of_period"] = significant(
            _weighted([float(i["share_of_period"]) for i in items], w.seconds) or 0.0, 4
        )
        # Mean power in idle steps, weighted by each day's idle time (a day without idle steps has none).
        idle_power = [
            (float(i["mean_power_of_series_w"]), float(i["share_of_period"]) * sec)
            for i, sec in zip(items, w.seconds, strict=True)
            if i.get("mean_power_of_series_w") is not None
        ]
        mean_power = _weighted([v for v, _ in idle_power], [t for _, t in idle_power]) if idle_power else None
        merged_i["mean_power_of_series_w"] = None if mean_power is None else significant(mean_power, 4)
        out["idle"] = merged_i
        excl = out.get("energy_per_million_tokens_excluding_idle")
        mtok = _fsum(w.mtok)
        if isinstance(excl, dict) and mtok > 0:
            out["energy_per_million_tokens_excluding_idle"] = {
                **excl,
                "value": significant((facility - idle_kwh) / mtok, 6),
            }
    for name in ("hardware", "software"):
        if name in out:
            out[name] = _same([d.get(name) for d in days])
    return out


def _sum_by_type(days: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in days[-1].items():
        if isinstance(entry, (int, float)):
            out[name] = round(_fsum(float(d.get(name) or 0) for d in days))
        elif isinstance(entry, dict) and "tokens" in entry:
            total = _fsum(float((d.get(name) or {}).get("tokens") or 0) for d in days)
            out[name] = {**entry, "tokens": round(total)}
        else:
            out[name] = entry
    return out


def _boundary(days: list[dict[str, Any]], w: Weights) -> dict[str, Any]:
    out = dict(days[-1])
    totals = []
    components = []
    for comp in days[-1].get("components") or []:
        same = [c for d in days for c in d.get("components") or [] if c.get("component") == comp["component"]]
        kwh = _fsum(_value(c["energy"]) for c in same)
        totals.append(kwh)
        merged = dict(comp)
        merged["energy"] = _q(kwh, "kWh")
        merged["per_million_tokens"] = _per_mtok(kwh, w, "kWh/Mtok")
        merged["basis"] = _same([c.get("basis") for c in same])
        components.append(merged)
    total = _fsum(totals)
    for merged, kwh in zip(components, totals, strict=True):
        merged["share"] = significant(kwh / total, 9) if total > 0 else 0.0
    out["components"] = components
    out["total_per_million_tokens"] = _per_mtok(total, w, "kWh/Mtok")
    return out


def _water(days: list[dict[str, Any]], w: Weights) -> dict[str, Any]:
    out = dict(days[-1])
    total_l = 0.0
    for part in ("onsite", "offsite"):
        docs = [d.get(part) for d in days]
        if all(isinstance(x, dict) for x in docs):
            litres = _fsum(_value(x) for x in docs)
            out[part] = _q(litres, "L")
            out[f"{part}_per_million_tokens"] = _per_mtok(litres, w, "L/Mtok")
            total_l += litres
    out["per_million_tokens"] = _per_mtok(total_l, w, "L/Mtok")
    if "wue" in out:
        values = [float(d["wue"]["value"]) for d in days]
        out["wue"] = {**out["wue"], "value": significant(_weighted(values, w.facility_kwh) or values[-1], 6)}
    return out


def _per_query(days: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    out = dict(days[-1])
    requests = round(_fsum(float(d["requests"]) for d in days))
    out["requests"] = requests
    for name in ("energy_per_thousand_queries", "carbon_per_thousand_queries", "water_per_thousand_queries"):
        if name in out and name in metrics:
            out[name] = {k: metrics[name][k] for k in ("unit", "value")}
        elif name in out:
            out.pop(name)
    output = float(metrics["output_tokens"]["value"])
    out["output_tokens_per_query"] = significant(output / requests, 6) if requests > 0 else None
    return out


def _uncertainty(days: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    last = days[-1]
    intervals = {}
    for name in last.get("intervals") or {}:
        metric = metrics.get(name)
        if metric is None or "interval95" not in metric:
            continue
        lo, hi = metric["interval95"]
        value = float(metric["value"])
        intervals[name] = {
            "interval95": [lo, hi],
            "relative": [significant(lo / value - 1, 4), significant(hi / value - 1, 4)] if value else None,
            "unit": metric["unit"],
            "value": metric["value"],
        }
    return {
        "confidence_level": last.get("confidence_level", 0.95),
        "defaults": _same([d.get("defaults") for d in days]),
        "draws": last.get("draws"),
        "intervals": intervals,
        "method": (
            f"each of the {len(days)} days: {last.get('method')}; the period's interval combines the days' "
            "comonotonically (the quantiles of a sum of fully correlated day totals are the sums of the days' "
            "quantiles): exact for the systematic sources, which repeat every day, and wider than needed for "
            "the independent ones"
        ),
        "days": len(days),
        "tokens": last.get("tokens"),
    }


def _findings(days: list[dict[str, Any]], missing: list[str]) -> list[dict[str, Any]]:
    """The days' findings, one per kind and severity with the days it was seen; plus what the period omits."""
    grouped: dict[tuple[str, str, int], dict[str, Any]] = {}
    for day in days:
        label = str(day["period"]["start"])[:10]
        seen: dict[tuple[str, str], int] = {}
        for f in day.get("findings") or []:
            kind = (str(f.get("finding")), str(f.get("severity")))
            seen[kind] = seen.get(kind, -1) + 1  # the j-th finding of its kind that day
            entry = grouped.setdefault((*kind, seen[kind]), {**f, "days": []})
            entry["days"].append(label)
    out = []
    for entry in grouped.values():
        first = entry["days"][0]
        entry["message"] = f"on {len(entry['days'])} of {len(days)} days; first ({first}): {entry['message']}"
        entry.pop("figures", None)  # a day's figures, not the period's
        out.append(entry)
    for name in missing:
        out.append(
            {
                "finding": "section-on-some-days",
                "severity": "warning",
                "message": f"{name}: stated on some days of the period only, so not stated for the period",
            }
        )
    return out


Section = Callable[[list[dict[str, Any]]], dict[str, Any]]


def combine_sections(
    days: list[dict[str, Any]], metrics: dict[str, Any], period: dict[str, str], w: Weights
) -> tuple[dict[str, Any], list[str]]:
    """The period's sections (carbon, reconciliation, load regime, boundary, water, per query, uncertainty,
    cross-checks) from the days' figures documents; and the names of those found on some days only."""
    rules: dict[str, Section] = {
        "carbon": lambda s: _carbon(s, w, period),
        "reconciliation": _reconciliation,
        "load_regime": lambda s: _load_regime(s, w, metrics),
        "boundary": lambda s: _boundary(s, w),
        "water": lambda s: _water(s, w),
        "per_query": lambda s: _per_query(s, metrics),
        "uncertainty": lambda s: _uncertainty(s, metrics),
    }
    out: dict[str, Any] = {}
    missing: list[str] = []
    for name, rule in rules.items():
        present = [name in d for d in days]
        if all(present):
            out[name] = rule([d[name] for d in days])
        elif any(present):
            missing.append(name)
    checks = [(d.get("data_quality") or {}).get("crosschecks") for d in days]
    if all(checks):
        out["crosschecks"] = _crosschecks([c for c in checks if c])
    elif any(checks):
        missing.append("data_quality.crosschecks")
    return out, missing


def combine_days(
    days: list[dict[str, Any]], headline: dict[str, dict[str, Any]], period: dict[str, str]
) -> dict[str, Any]:
    """The parts of the period's figures document that come from the days' documents (see module docstring):
    ``metrics`` (``headline`` overriding), the sections, ``findings`` and ``token_coverage``."""
    w = weights_of(days)
    metrics, partial_metrics = combine_metrics(days, w, headline)
    sections, missing = combine_sections(days, metrics, period, w)
    crosschecks = sections.pop("crosschecks", None)
    result: dict[str, Any] = {"metrics": metrics, **sections}
    findings = _findings(days, missing + [f"metrics.{m}" for m in partial_metrics])
    if findings:
        result["findings"] = findings
    data_quality: dict[str, Any] = {}
    if crosschecks is not None:
        data_quality["crosschecks"] = crosschecks
    coverage = [(d.get("data_quality") or {}).get("token_coverage") for d in days]
    values = [float(c) for c in coverage if c is not None]
    if len(values) == len(days):
        data_quality["token_coverage"] = round(_weighted(values, w.seconds) or 0.0, 9)
    result["data_quality"] = data_quality
    return result

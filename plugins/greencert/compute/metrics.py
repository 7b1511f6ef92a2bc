"""Energy, tokens and operational carbon per million tokens, with pint.

Arrays leave the integration engine as plain magnitudes in the manifest's
units; they are wrapped as whole-array Quantities here and converted once.
Facility energy is IT energy x PUE (declared), or IT energy x the hourly
ratio of a facility meter to an IT meter (measured PUE). Carbon is
location-based: each hour's facility energy x that hour's grid intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greencert.bundle.reader import Bundle
from greencert.compute.attribution import attributed
from greencert.compute.boundary import boundary_defaults, idle_capacity
from greencert.compute.fold import power_fold, series_energy
from greencert.compute.integrate import energy_unit, integrate
from greencert.compute.reconcile import node_parts as unmetered_node_parts
from greencert.compute.uncertainty import load_defaults
from greencert.errors import BundleError
from greencert.grading import Scheme, effective_max_gap
from greencert.units import Q_, as_array, significant, ureg


@dataclass
class Figures:
    """Certified figures as pint Quantities plus the hourly detail they came from."""

    it_energy: Any
    facility_energy: Any
    output_tokens: Any
    input_tokens: Any
    energy_per_million_tokens: Any
    carbon_per_million_tokens: Any
    operational_carbon: Any
    pue: float
    pue_basis: str
    grid_basis: str
    hourly_intensity_share: float
    coverage: float
    hour_starts: np.ndarray
    it_energy_hourly_kwh: np.ndarray
    facility_energy_hourly_kwh: np.ndarray
    intensity_hourly: np.ndarray  # gCO2e/kWh
    output_tokens_hourly: np.ndarray
    device_energy_kwh: dict[str, float] = field(default_factory=dict)
    devices: int = 0
    # Scheme 2026.2+: how the IT energy covers whole nodes (compute.reconcile.NodeParts), else None.
    node_parts: Any = None
    # Scheme 2026.3 full-stack boundary (compute/boundary.py): the idle provisioned capacity added
    # (IdleCapacity: share of IT energy, low, high, basis, source) and its energy; None before 2026.3.
    idle_capacity: Any = None
    idle_capacity_energy: Any = None

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Headline metrics as {value, unit}; units are fixed by the certificate format."""

        def m(q: Any, unit: str) -> dict[str, Any]:
            return {"value": significant(q.to(unit).magnitude), "unit": unit}

        out = {
            "it_energy": m(self.it_energy, "kWh"),
            "facility_energy": m(self.facility_energy, "kWh"),
            "output_tokens": m(self.output_tokens, "token"),
            "input_tokens": m(self.input_tokens, "token"),
            "energy_per_million_tokens": m(self.energy_per_million_tokens, "kWh/Mtok"),
            "carbon_per_million_tokens": m(self.carbon_per_million_tokens, "gCO2e/Mtok"),
            "operational_carbon": m(self.operational_carbon, "gCO2e"),
        }
        if self.idle_capacity_energy is not None:
            out["idle_capacity_energy"] = m(self.idle_capacity_energy, "kWh")
        return out


def hourly_intensity(bundle: Bundle, hour_edges: np.ndarray) -> tuple[np.ndarray, str, float]:
    """Intensity in gCO2e/kWh for each hour bin of the period, basis, and share of hourly data."""
    grid = bundle.manifest.grid
    unit = ureg.Unit(grid.unit) if _is_intensity(grid.unit) else None
    if unit is None:
        raise BundleError(
            f"grid unit {grid.unit!r} is not a carbon intensity such as gCO2e/kWh", "manifest.yaml grid.unit"
        )
    n_hours = hour_edges.size - 1
    if grid.annual is not None:
        value = Q_(grid.annual, unit).to("gCO2e/kWh").magnitude
        return np.full(n_hours, value), "annual", 0.0
    series = bundle.grid
    assert series is not None
    bins = np.floor(hour_edges[:-1] / 3600.0) * 3600.0
    order = np.argsort(series.t)
    t_sorted = series.t[order]
    pos = np.searchsorted(t_sorted, bins)
    pos = np.minimum(pos, t_sorted.size - 1)
    if not np.array_equal(t_sorted[pos], bins):
        missing = bins[t_sorted[pos] != bins]
        raise BundleError(
            f"grid file has no intensity for {missing.size} hour(s), first {missing[0]:.0f}", series.file
        )
    values = series.values["intensity"][order][pos]
    return as_array(values, unit).to("gCO2e/kWh").magnitude, "hourly", 1.0


def _is_intensity(text: str) -> bool:
    try:
        return ureg.Unit(text).dimensionality == ureg.get_dimensionality("[carbon] / [energy]")
    except Exception:
        return False


def compute_figures(bundle: Bundle, scheme: Scheme) -> Figures:
    m = bundle.manifest
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    max_gap = effective_max_gap(m.power, scheme)

    # The power series as folded shard by shard (compute/fold.py): the same integral as validation's.
    power = power_fold(bundle, scheme).integrated
    unit = energy_unit(m.power, "power")
    per_hour = power.per_hour
    if m.attribution is not None:
        # Shared GPUs: only this deployment's share of each device (docs/prometheus.md, Attribution).
        per_hour = attributed(m.attribution, power.devices, per_hour, "manifest.yaml attribution")
    it_hourly = as_array(per_hour.sum(axis=0), unit).to("kWh").magnitude
    device_kwh = as_array(per_hour.sum(axis=1), unit).to("kWh").magnitude
    edges = power.edges
    node_parts = None
    if scheme.integrity is not None and scheme.integrity.add_unmetered_node_energy:
        # CPUs, memory, NICs and fans a GPU-only series misses (docs/uncertainty.md).
        node_parts = unmetered_node_parts(
            bundle, it_hourly, start, end, scheme.max_gap_seconds, load_defaults(scheme.integrity.defaults)
        )
        it_hourly = node_parts.it_hourly_kwh

    # Scheme 2026.3: idle provisioned capacity joins the IT energy before the PUE applies, hour by
    # hour, so facility energy and carbon include it (compute/boundary.py, Google 2025).
    idle = idle_capacity(m, boundary_defaults(scheme))
    served_hourly = it_hourly if idle is None else it_hourly + it_hourly * idle.share

    if m.facility.meter is not None and bundle.facility_meter is not None and bundle.it_meter is not None:
        fac, fac_unit = series_energy(
            bundle.facility_meter, m.facility.meter, start, end, max_gap, "facility.meter"
        )
        itm, itm_unit = series_energy(
            bundle.it_meter, m.facility.it_meter, start, end, max_gap, "facility.it_meter"
        )
        fac_h = as_array(fac.per_hour.sum(axis=0), fac_unit).to("kWh").magnitude
        itm_h = as_array(itm.per_hour.sum(axis=0), itm_unit).to("kWh").magnitude
        if (itm_h <= 0).any():
            hour = int(np.argmax(itm_h <= 0))
            raise BundleError(
                f"IT meter reads no energy in hour {hour} of the period: PUE undefined", "facility.it_meter"
            )
        pue_hourly = fac_h / itm_h
        facility_hourly = served_hourly * pue_hourly
        pue_basis = "measured"
    else:
        if m.facility.pue is None:  # the manifest model requires a pue where the meters are missing
            raise BundleError("facility has neither a declared pue nor both meters", "manifest.yaml facility")
        pue_hourly = np.full(it_hourly.size, float(m.facility.pue))
        facility_hourly = served_hourly * pue_hourly
        pue_basis = "declared"

    tokens_out = integrate(bundle.tokens, "output_tokens", "counter", start, end, np.inf)
    tokens_in = integrate(bundle.tokens, "input_tokens", "counter", start, end, np.inf)
    out_hourly = tokens_out.per_hour.sum(axis=0)

    intensity, grid_basis, hourly_share = hourly_intensity(bundle, edges)

    it_energy = Q_(float(it_hourly.sum()), "kWh")
    facility_energy = Q_(float(facility_hourly.sum()), "kWh")
    output_tokens = Q_(float(out_hourly.sum()), "token")
    input_tokens = Q_(float(tokens_in.per_hour.sum()), "token")
    carbon = Q_(
        float(
            np.sum(as_array(facility_hourly, "kWh") * as_array(intensity, "gCO2e/kWh")).to("gCO2e").magnitude
        ),
        "gCO2e",
    )
    if output_tokens.magnitude <= 0:
        raise BundleError("no output tokens in the period: energy per token undefined", bundle.tokens.file)
    idle_energy = None if idle is None else Q_(float((it_hourly * idle.share).sum()), "kWh")
    # The PUE stays facility / (IT + idle): idle machines are IT equipment, not overhead.
    served = it_energy.magnitude if idle_energy is None else it_energy.magnitude + idle_energy.magnitude
    pue = float(facility_energy.magnitude / served) if served > 0 else float("nan")
    return Figures(
        it_energy=it_energy,
        facility_energy=facility_energy,
        output_tokens=output_tokens,
        input_tokens=input_tokens,
        energy_per_million_tokens=(facility_energy / output_tokens).to("kWh/Mtok"),
        carbon_per_million_tokens=(carbon / output_tokens).to("gCO2e/Mtok"),
        operational_carbon=carbon,
        pue=pue,
        pue_basis=pue_basis,
        grid_basis=grid_basis,
        hourly_intensity_share=hourly_share,
        coverage=power.coverage(),
        hour_starts=edges[:-1],
        it_energy_hourly_kwh=it_hourly,
        facility_energy_hourly_kwh=facility_hourly,
        intensity_hourly=intensity,
        output_tokens_hourly=out_hourly,
        device_energy_kwh={d: float(e) for d, e in zip(power.devices, device_kwh, strict=True)},
        devices=len(power.devices),
        node_parts=node_parts,
        idle_capacity=idle,
        idle_capacity_energy=idle_energy,
    )

"""Cross-check a second meter of the same devices against the certified power series.

Where a bundle has both a power gauge and an energy counter of the same GPUs (DCGM exports both),
the counter's increase over the period (resets handled as Prometheus ``increase()``) must match the
integrated power, device by device. In the spirit of MLPerf Power's checks the default tolerance is
5 %. A device outside the tolerance does not stop certification (the certified figure always comes
from ``power``) but puts a data-quality finding on the certificate: a gap, a wrong unit, a drifting
sensor or a mislabelled series shows up this way.

Only meters declared ``crosscheck: true`` in the manifest are compared: a node or CPU meter measures
something else than the GPUs, so a difference there says nothing about data quality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greencert.bundle.reader import Bundle
from greencert.compute.fold import power_fold, series_energy
from greencert.compute.integrate import energy_unit
from greencert.grading import Scheme, effective_max_gap
from greencert.units import as_array, significant

DEFAULT_TOLERANCE = 0.05
# Devices listed per finding; the counts cover all of them.
MAX_LISTED_DEVICES = 10


@dataclass
class CrossChecks:
    summaries: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)


def tolerance_for(spec_tolerance: float | None, scheme: Scheme) -> float:
    if spec_tolerance is not None:
        return float(spec_tolerance)
    return float(scheme.raw.get("data_quality", {}).get("crosscheck_tolerance", DEFAULT_TOLERANCE))


def _kwh(series, spec, start: float, end: float, max_gap: float, where: str) -> tuple[list[str], np.ndarray]:
    integrated, unit = series_energy(series, spec, start, end, max_gap, where)
    return integrated.devices, as_array(integrated.per_device, unit).to("kWh").magnitude


def crosscheck_meters(bundle: Bundle, scheme: Scheme) -> CrossChecks:
    """Compare every ``crosscheck: true`` meter with ``power`` per device over the period."""
    m = bundle.manifest
    out = CrossChecks()
    specs = [spec for spec in m.meters if spec.crosscheck]
    if not specs:
        return out
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    power = power_fold(bundle, scheme).integrated
    p_devices = power.devices
    p_kwh = as_array(power.per_device, energy_unit(m.power, "power")).to("kWh").magnitude
    power_by_device = dict(zip(p_devices, p_kwh, strict=True))
    for spec in specs:
        gap = effective_max_gap(spec, scheme)
        m_devices, m_kwh = _kwh(bundle.meters[spec.name], spec, start, end, gap, f"meters.{spec.name}")
        meter_by_device = dict(zip(m_devices, m_kwh, strict=True))
        common = [d for d in p_devices if d in meter_by_device]
        tol = tolerance_for(spec.crosscheck_tolerance, scheme)
        power_e = np.array([power_by_device[d] for d in common])
        meter_e = np.array([meter_by_device[d] for d in common])
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(power_e > 0, (meter_e - power_e) / power_e, np.where(meter_e > 0, np.inf, 0.0))
        outside = np.abs(rel) > tol
        summary = {
            "check": "energy_counter_vs_integrated_power",
            "meter": spec.name,
            "layer": spec.layer,
            "tolerance": tol,
            "devices_compared": len(common),
            "devices_outside_tolerance": int(outside.sum()),
            "devices_without_meter": sorted(set(p_devices) - set(meter_by_device)),
            "devices_without_power": sorted(set(m_devices) - set(power_by_device)),
            "max_abs_relative_difference": significant(float(np.max(np.abs(rel))), 9) if rel.size else None,
            "passed": bool(not outside.any()),
        }
        out.summaries.append(summary)
        if outside.any():
            order = np.argsort(-np.abs(np.where(outside, rel, 0.0)), kind="stable")[: int(outside.sum())]
            worst = [
                {
                    "device": common[i],
                    "meter_energy_kwh": significant(meter_e[i], 9),
                    "integrated_power_kwh": significant(power_e[i], 9),
                    "relative_difference": significant(rel[i], 9) if np.isfinite(rel[i]) else None,
                }
                for i in order[:MAX_LISTED_DEVICES]
            ]
            first = worst[0]
            diff = (
                "no power" if first["relative_difference"] is None else f"{first['relative_difference']:+.1%}"
            )
            out.findings.append(
                {
                    "finding": "energy_crosscheck_mismatch",
                    "severity": "warning",
                    "meter": spec.name,
                    "tolerance": tol,
                    "devices_compared": len(common),
                    "devices_outside_tolerance": int(outside.sum()),
                    "devices": worst,
                    "message": (
                        f"{spec.name} and the integrated power disagree by more than {tol:.0%} on "
                        f"{int(outside.sum())} of {len(common)} device(s); largest: {first['device']} "
                        f"{diff} ({first['meter_energy_kwh']:.6g} vs {first['integrated_power_kwh']:.6g} kWh)"
                    ),
                }
            )
    return out

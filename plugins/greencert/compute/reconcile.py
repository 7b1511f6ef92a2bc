"""Reconciliation between meter layers, and the unmetered parts of the nodes (docs/uncertainty.md).

Layers, from the load outwards: ``gpu`` (GPU sensors and counters), ``node``
(BMC/Redfish node power), ``pdu`` (rack PDU or a revenue meter on the IT feed)
and ``facility``. The certified series (``power``) sits in the layer of its
meter class; ``meters:`` declare further layers. Per UTC hour the energy of
each layer must not exceed the next one out (GPU <= node <= PDU <= facility),
allowing for both meters' accuracy; a measured facility / IT ratio must agree
with a declared PUE; two meters of the certified series' own layer (a DCGM
energy counter next to the power gauge) must agree within the scheme's
tolerance. Every check becomes a finding with its figures.

A GPU-only series misses the CPUs, memory, NICs and fans of its nodes. With a
node-layer meter the IT energy of an hour is the node energy (which contains
the GPUs); without one it is the GPU energy times a documented ratio whose
range widens the interval. The certificate says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from greencert.bundle.reader import Bundle, DeviceShards, Series
from greencert.compute.fold import series_energy
from greencert.compute.uncertainty import meter_accuracy
from greencert.units import Q_, as_array, significant

LAYERS = ("gpu", "node", "pdu", "facility")
LAYER_NAMES = {"gpu": "GPU", "node": "node", "pdu": "PDU", "facility": "facility"}


@dataclass
class LayerSeries:
    """One metered series integrated per UTC hour of the period (kWh)."""

    source: str  # manifest key: "power", "meters.<name>", "facility.meter", "facility.it_meter"
    layer: str | None
    meter_class: str | None
    kind: str
    accuracy: float
    accuracy_basis: str
    file: str
    hourly_kwh: np.ndarray
    devices: list[str]
    device_kwh: np.ndarray

    @property
    def total_kwh(self) -> float:
        return float(self.hourly_kwh.sum())


@dataclass
class NodeParts:
    """How the IT energy covers whole nodes, and the hourly IT energy that results."""

    basis: str  # node_meter | estimated_ratio | whole_node_metered | not_declared
    it_hourly_kwh: np.ndarray
    power_hourly_kwh: np.ndarray
    ratio: tuple[float, float, float] | None = None
    node_hourly_kwh: np.ndarray | None = None
    node_accuracy: float = 0.0
    node_sources: list[str] = field(default_factory=list)
    layers: list[LayerSeries] = field(default_factory=list)
    # False when the certified series has no meter_class and the defaults read it as GPU-only (2026.3).
    meter_class_declared: bool = True


def primary_layer(meter_class: str | None, defaults: dict[str, Any]) -> str | None:
    """Layer of a meter class. 2026.3 defaults read an undeclared class conservatively
    (``undeclared_meter_layer: gpu``: node parts are added, so leaving it out never lowers the figure)."""
    if meter_class is None:
        return defaults.get("undeclared_meter_layer")
    return defaults["meter_layers"].get(meter_class)


def integrate_layer(
    series: Series | DeviceShards,
    spec: Any,
    source: str,
    layer: str | None,
    start: float,
    end: float,
    default_gap: float,
    defaults: dict[str, Any],
) -> LayerSeries:
    # The scheme's gap (``default_gap``), tightened only by the manifest.
    max_gap = min(Q_(spec.max_gap).to("s").magnitude, default_gap) if spec.max_gap else default_gap
    integ, unit = series_energy(series, spec, start, end, max_gap, source)
    hourly = as_array(integ.per_hour.sum(axis=0), unit).to("kWh").magnitude
    per_device = as_array(integ.per_device, unit).to("kWh").magnitude
    accuracy, basis = meter_accuracy(spec, defaults)
    return LayerSeries(
        source,
        layer,
        spec.meter_class,
        spec.kind,
        accuracy,
        basis,
        series.file,
        hourly,
        list(integ.devices),
        per_device,
    )


def meter_layers(
    bundle: Bundle, start: float, end: float, default_gap: float, defaults: dict
) -> list[LayerSeries]:
    """Every metered series besides ``power``: ``meters:`` and the facility / IT meters."""
    m = bundle.manifest
    out = [
        integrate_layer(
            bundle.meters[spec.name],
            spec,
            f"meters.{spec.name}",
            spec.layer,
            start,
            end,
            default_gap,
            defaults,
        )
        for spec in m.meters
    ]
    if bundle.facility_meter is not None and m.facility.meter is not None:
        out.append(
            integrate_layer(
                bundle.facility_meter,
                m.facility.meter,
                "facility.meter",
                "facility",
                start,
                end,
                default_gap,
                defaults,
            )
        )
    if bundle.it_meter is not None and m.facility.it_meter is not None:
        # The site's whole IT load: used for the PUE, not in the per-deployment layer order.
        out.append(
            integrate_layer(
                bundle.it_meter,
                m.facility.it_meter,
                "facility.it_meter",
                None,
                start,
                end,
                default_gap,
                defaults,
            )
        )
    return out


def node_parts(
    bundle: Bundle, power_hourly_kwh: np.ndarray, start: float, end: float, default_gap: float, defaults: dict
) -> NodeParts:
    """IT energy per hour including the parts of the nodes the certified series does not meter."""
    spec = bundle.manifest.power
    layers = meter_layers(bundle, start, end, default_gap, defaults)
    layer = primary_layer(spec.meter_class, defaults)
    declared = spec.meter_class is not None or layer is None
    if layer != "gpu":
        basis = "not_declared" if spec.meter_class is None else "whole_node_metered"
        return NodeParts(basis, power_hourly_kwh, power_hourly_kwh, layers=layers)
    nodes = [lay for lay in layers if lay.layer == "node"]
    if nodes:
        node = np.sum([lay.hourly_kwh for lay in nodes], axis=0)
        # The worst accuracy of the node meters applies to their sum (conservative).
        accuracy = max(lay.accuracy for lay in nodes)
        return NodeParts(
            "node_meter",
            np.maximum(node, power_hourly_kwh),
            power_hourly_kwh,
            node_hourly_kwh=node,
            node_accuracy=accuracy,
            node_sources=[lay.source for lay in nodes],
            layers=layers,
            meter_class_declared=declared,
        )
    no = defaults["node_overhead"]
    ratio = (float(no["value"]), float(no["low"]), float(no["high"]))
    return NodeParts(
        "estimated_ratio",
        power_hourly_kwh * ratio[0],
        power_hourly_kwh,
        ratio=ratio,
        layers=layers,
        meter_class_declared=declared,
    )


# --------------------------------------------------------------------------- findings


def finding(code: str, severity: str, message: str, **figures: Any) -> dict[str, Any]:
    return {"finding": code, "severity": severity, "message": message, "figures": figures}


@dataclass
class Reconciliation:
    section: dict[str, Any]
    findings: list[dict[str, Any]]
    cross_factor: tuple[float, float] | None


def reconcile(
    bundle: Bundle,
    parts: NodeParts,
    power: LayerSeries,
    power_gap_mid_kwh: np.ndarray,
    hour_starts: np.ndarray,
    same_layer_tolerance: float,
    pue_tolerance: float,
    defaults: dict,
    delegated_tolerances: dict[str, float] | None = None,
) -> Reconciliation:
    """Check the layers against each other; return findings, the section and any cross-check factor."""
    m = bundle.manifest
    findings: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    cross_factor: tuple[float, float] | None = None
    # The certified series with its gaps filled at their mid estimate, for fair comparisons
    # with counters (which bridge gaps) and other layers.
    power_filled = power.hourly_kwh + power_gap_mid_kwh
    layer = power.layer

    # 1. Same layer: another meter of the certified series' layer (e.g. GPU energy counter vs power gauge).
    # Meters declared ``crosscheck: true`` are compared device by device by compute.crosscheck, which
    # puts its own finding on the certificate; here they only widen the interval when they disagree.
    for other in (lay for lay in parts.layers if layer is not None and lay.layer == layer):
        common = [d for d in power.devices if d in other.devices]
        delegated = other.source in (delegated_tolerances or {})
        if delegated:
            tol = (delegated_tolerances or {})[other.source]
            base = float(sum(power.device_kwh[power.devices.index(d)] for d in common))
            theirs = float(sum(other.device_kwh[other.devices.index(d)] for d in common))
        else:
            tol = same_layer_tolerance
            base, theirs = float(power_filled.sum()), other.total_kwh
        ratio = theirs / base if base > 0 else float("inf")
        diff = ratio - 1.0
        ok = abs(diff) <= tol
        check = {
            "check": "same_layer",
            "layer": layer,
            "sources": [power.source, other.source],
            "energy_kwh": [significant(base, 6), significant(theirs, 6)],
            "relative_difference": significant(diff, 4),
            "tolerance": tol,
            "passed": ok,
        }
        if delegated:
            check["per_device_check"] = "compute.crosscheck (data_quality.crosschecks)"
        checks.append(check)
        what = (
            f"{other.source} ({other.kind}, {other.file}) and {power.source} ({power.kind}, {power.file}) "
            f"measure the same {LAYER_NAMES.get(layer or '', layer)} layer: {significant(theirs, 5)} kWh against "
            f"{significant(base, 5)} kWh over the period ({diff:+.1%})"
        )
        if not ok:
            lo, hi = sorted((1.0, ratio))
            if cross_factor is not None:
                lo, hi = min(lo, cross_factor[0]), max(hi, cross_factor[1])
            cross_factor = (lo, hi)
            findings.append(
                finding(
                    "same-layer-disagree",
                    "warning",
                    f"{what}, beyond the +-{tol:.0%} tolerance: the 95 % interval is widened to span both "
                    "readings (the truth may lie anywhere between them)",
                    relative_difference=significant(diff, 4),
                    tolerance=tol,
                    sources=[power.source, other.source],
                )
            )
        elif not delegated:
            findings.append(
                finding(
                    "same-layer-agree",
                    "info",
                    f"{what}, within the +-{tol:.0%} tolerance",
                    relative_difference=significant(diff, 4),
                    tolerance=tol,
                )
            )

    # 2. Layer order per hour: GPU <= node <= PDU <= facility, allowing for both meters' accuracy.
    by_layer: dict[str, tuple[np.ndarray, float, list[str]]] = {}
    if layer is not None:
        by_layer[layer] = (power_filled, power.accuracy, [power.source])
    for lay in parts.layers:
        if lay.layer is None or lay.layer == layer:
            continue
        if lay.layer in by_layer:
            prev = by_layer[lay.layer]
            by_layer[lay.layer] = (
                prev[0] + lay.hourly_kwh,
                max(prev[1], lay.accuracy),
                [*prev[2], lay.source],
            )
        else:
            by_layer[lay.layer] = (lay.hourly_kwh, lay.accuracy, [lay.source])
    present = [name for name in LAYERS if name in by_layer]
    for inner, outer in zip(present, present[1:], strict=False):
        e_in, a_in, src_in = by_layer[inner]
        e_out, a_out, src_out = by_layer[outer]
        allowed = e_out * (1.0 + a_in + a_out)
        bad = e_in > allowed
        n_bad = int(bad.sum())
        total_ratio = float(e_out.sum() / e_in.sum()) if e_in.sum() > 0 else float("inf")
        check = {
            "check": "layer_order",
            "inner": inner,
            "outer": outer,
            "sources": [*src_in, *src_out],
            "energy_kwh": [significant(e_in.sum(), 6), significant(e_out.sum(), 6)],
            "outer_to_inner_ratio": significant(total_ratio, 4),
            "hours": int(e_in.size),
            "hours_violated": n_bad,
            "tolerance": significant(a_in + a_out, 4),
            "passed": n_bad == 0,
        }
        checks.append(check)
        label = f"{LAYER_NAMES[inner]} energy <= {LAYER_NAMES[outer]} energy"
        if n_bad == 0:
            findings.append(
                finding(
                    "layer-order-ok",
                    "info",
                    f"{label} in all {e_in.size} hours; {LAYER_NAMES[outer]}/{LAYER_NAMES[inner]} = "
                    f"{total_ratio:.3f} over the period",
                    outer_to_inner_ratio=significant(total_ratio, 4),
                )
            )
        else:
            worst = int(np.argmax(np.where(bad, e_in / np.maximum(e_out, 1e-300), -np.inf)))
            stamp = np.datetime_as_string(np.datetime64(int(hour_starts[worst]), "s")) + "Z"
            findings.append(
                finding(
                    "layer-order-violated",
                    "warning",
                    f"{label} fails in {n_bad} of {e_in.size} hours beyond both meters' accuracy "
                    f"(+-{a_in + a_out:.1%}); worst hour {stamp}: {LAYER_NAMES[inner]} {significant(e_in[worst], 5)} kWh, "
                    f"{LAYER_NAMES[outer]} {significant(e_out[worst], 5)} kWh",
                    hours_violated=n_bad,
                    worst_hour=stamp,
                )
            )

    # 3. Facility / IT against the declared PUE.
    fac = next((lay for lay in parts.layers if lay.source == "facility.meter"), None)
    itm = next((lay for lay in parts.layers if lay.source == "facility.it_meter"), None)
    if fac is None and "facility" in by_layer and "pdu" in by_layer:
        fac_e, fac_a, fac_src = by_layer["facility"]
        it_e, it_a, it_src = by_layer["pdu"]
    elif fac is not None and itm is not None:
        fac_e, fac_a, fac_src = fac.hourly_kwh, fac.accuracy, [fac.source]
        it_e, it_a, it_src = itm.hourly_kwh, itm.accuracy, [itm.source]
    else:
        fac_e = None
    if fac_e is not None and m.facility.pue is not None and it_e.sum() > 0:
        measured = float(fac_e.sum() / it_e.sum())
        declared = float(m.facility.pue)
        diff = measured / declared - 1.0
        tol = pue_tolerance + fac_a + it_a
        ok = abs(diff) <= tol
        checks.append(
            {
                "check": "pue",
                "sources": [*fac_src, *it_src],
                "measured_pue": significant(measured, 5),
                "declared_pue": declared,
                "relative_difference": significant(diff, 4),
                "tolerance": significant(tol, 4),
                "passed": ok,
            }
        )
        findings.append(
            finding(
                "pue-agrees" if ok else "pue-disagrees",
                "info" if ok else "warning",
                f"measured facility/IT = {measured:.3f} against declared PUE {declared:.3f} ({diff:+.1%}; "
                f"tolerance +-{tol:.1%} = scheme {pue_tolerance:.0%} + both meters' accuracy)",
                measured_pue=significant(measured, 5),
                declared_pue=declared,
            )
        )

    # 4. The unmetered parts of the nodes: say which way they were added.
    it_total = float(parts.it_hourly_kwh.sum())
    power_total = float(parts.power_hourly_kwh.sum())
    node: dict[str, Any] = {"basis": parts.basis}
    if parts.basis == "node_meter":
        node.update(
            {
                "method": "IT energy per hour = node-meter energy (which contains the GPUs); "
                "the GPU series where it reads more",
                "sources": parts.node_sources,
                "added_kwh": significant(it_total - power_total, 6),
            }
        )
        findings.append(
            finding(
                "node-parts-metered",
                "info",
                f"CPU, memory, network and fans added from node meters ({', '.join(parts.node_sources)}): "
                f"+{significant(it_total - power_total, 5)} kWh on {significant(power_total, 5)} kWh of GPU energy",
                added_kwh=significant(it_total - power_total, 6),
            )
        )
    elif parts.basis == "estimated_ratio":
        assert parts.ratio is not None
        no = defaults["node_overhead"]
        node.update(
            {
                "method": "IT energy = GPU energy x node/GPU ratio (no node meter in the bundle)",
                "ratio": parts.ratio[0],
                "ratio_range": [parts.ratio[1], parts.ratio[2]],
                "source": no["source"].strip(),
                "added_kwh": significant(it_total - power_total, 6),
            }
        )
        findings.append(
            finding(
                "node-parts-estimated",
                "info",
                f"no node meter: CPU, memory, network and fans estimated as GPU energy x {parts.ratio[0]} "
                f"(range {parts.ratio[1]}-{parts.ratio[2]}, which widens the interval)",
                ratio=parts.ratio[0],
            )
        )
    elif parts.basis == "whole_node_metered":
        node["method"] = (
            f"the certified series is a {m.power.meter_class}: it meters whole nodes, nothing is added"
        )
    else:
        node["method"] = (
            "the certified series has no meter_class: taken as the whole IT load, nothing is added"
        )
        findings.append(
            finding(
                "meter-class-undeclared",
                "warning",
                "power.meter_class is not declared: the series is taken as the whole IT load; if it meters "
                "GPUs only, the figure leaves out CPUs, memory and network",
            )
        )
    if not parts.meter_class_declared:
        node["meter_class_undeclared"] = "read as GPU-only metering (conservative)"
        findings.append(
            finding(
                "meter-class-undeclared",
                "warning",
                "power.meter_class is not declared: the series is read as GPU-only metering and the node "
                "parts are added (the conservative reading); declare the meter class to certify what was metered",
            )
        )
    section = {
        "layers": [
            {
                "source": lay.source,
                "layer": lay.layer,
                "meter_class": lay.meter_class,
                "kind": lay.kind,
                "file": lay.file,
                "energy_kwh": significant(lay.total_kwh, 6),
                "accuracy": lay.accuracy,
            }
            for lay in [power, *parts.layers]
        ],
        "checks": checks,
        "unmetered_node_parts": node,
    }
    return Reconciliation(section, findings, cross_factor)

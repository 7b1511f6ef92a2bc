"""Daily partial results that add up exactly to a month's certificate.

A month is certified as 30 (or 28-31) daily tasks. Each day's task validates
and integrates its own bundle and saves a *partial*: the additive quantities
of that day, hour by hour,

* IT energy per hour (kWh) and per device per hour (kWh),
* facility energy per hour (IT x the hour's PUE, declared or measured),
* output and input token increases per hour,
* grid intensity per hour (not additive: it weights its own hour),
* covered and possible device-seconds (for coverage).

Every certified figure is a sum over hours or a ratio of such sums, so the
month's figures follow from the concatenated hours without re-reading a single
sample: energy per Mtok = sum of facility energy / sum of output tokens, carbon
= sum over hours of facility energy x intensity. Ratios are never averaged.

Totals are summed with ``math.fsum`` (correctly rounded, independent of order),
so the month's total is exactly the sum of the days' hourly values however
they are grouped. Floats are stored in JSON with Python's shortest round-trip
repr, so saving and loading a partial loses nothing.

Because every day's bundle includes the sample at its end boundary (which is
also the next day's first sample, see ``sources/fleet.py``), the integral
over the month equals the sum of the daily integrals: no 15 s step between
two days is lost or counted twice.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greencert.times import stamp, to_utc

FORMAT = "greencert-day-partial/2"
# /1 partials carry no figures document: they still combine into the hourly totals, but a period
# certificate needs every day's sections, so they are refused there (certify those days again).
FORMATS = ("greencert-day-partial/1", FORMAT)


@dataclass(frozen=True)
class DayPartial:
    """Additive hourly results of one deployment for one period (normally a UTC day)."""

    scope: dict[str, Any]
    start: str
    end: str
    scheme: dict[str, str]
    hour_start: np.ndarray  # Unix seconds of each hour bin
    it_energy_kwh: np.ndarray
    facility_energy_kwh: np.ndarray
    grid_intensity: np.ndarray  # gCO2e/kWh
    output_tokens: np.ndarray
    input_tokens: np.ndarray
    devices: list[str]
    device_energy_kwh: np.ndarray  # (n_devices, n_hours), GPU (power series) energy
    covered_device_seconds: float
    possible_device_seconds: float
    pue_basis: str
    grid_basis: str
    validation: dict[str, Any]
    inputs: list[dict[str, str]]
    # The day's methodology record (figures.json), carried into the combined certificate.
    methodology: dict[str, Any] = field(default_factory=dict)
    # The day's whole figures document (figures.json as published): the period's sections are
    # combined from these (compute/period.py); empty in /1 partials.
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "scope": self.scope,
            "period": {"start": self.start, "end": self.end},
            "scheme": self.scheme,
            "hour_start": [int(h) for h in self.hour_start],
            "it_energy_kwh": self.it_energy_kwh.tolist(),
            "facility_energy_kwh": self.facility_energy_kwh.tolist(),
            "grid_intensity_gco2e_per_kwh": self.grid_intensity.tolist(),
            "output_tokens": self.output_tokens.tolist(),
            "input_tokens": self.input_tokens.tolist(),
            "devices": self.devices,
            "device_energy_kwh": self.device_energy_kwh.tolist(),
            "covered_device_seconds": self.covered_device_seconds,
            "possible_device_seconds": self.possible_device_seconds,
            "pue_basis": self.pue_basis,
            "grid_basis": self.grid_basis,
            "validation": self.validation,
            "inputs": self.inputs,
            "methodology": self.methodology,
            "figures": self.figures,
        }
        # json writes floats with repr(): the shortest text that reads back to the same double.
        return json.dumps(doc, sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str = "partial") -> DayPartial:
        from greencert.errors import BundleError

        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise BundleError(f"day partial is not JSON ({exc})", where) from None
        if not isinstance(doc, dict) or doc.get("format") not in FORMATS:
            raise BundleError(f"not a {FORMAT} file", where)
        arr = lambda key: np.asarray(doc[key], dtype=np.float64)  # noqa: E731
        return cls(
            scope=doc["scope"],
            start=doc["period"]["start"],
            end=doc["period"]["end"],
            scheme=doc["scheme"],
            hour_start=arr("hour_start"),
            it_energy_kwh=arr("it_energy_kwh"),
            facility_energy_kwh=arr("facility_energy_kwh"),
            grid_intensity=arr("grid_intensity_gco2e_per_kwh"),
            output_tokens=arr("output_tokens"),
            input_tokens=arr("input_tokens"),
            devices=list(doc["devices"]),
            device_energy_kwh=np.asarray(doc["device_energy_kwh"], dtype=np.float64).reshape(
                len(doc["devices"]), -1
            ),
            covered_device_seconds=float(doc["covered_device_seconds"]),
            possible_device_seconds=float(doc["possible_device_seconds"]),
            pue_basis=doc["pue_basis"],
            grid_basis=doc["grid_basis"],
            validation=doc["validation"],
            inputs=doc["inputs"],
            methodology=doc.get("methodology", {}),
            figures=doc.get("figures", {}),
        )


def day_partial(
    bundle: Any, scheme: Any, validation: dict[str, Any], figures: dict[str, Any] | None = None
) -> DayPartial:
    """The partial of a validated bundle (call while its arrays are loaded; integrals are reused).

    ``figures``: the day's figures document (``pipeline.figures_document``), carried whole so the
    period's certificate can state every section; a bare methodology record is still accepted.
    """
    doc = dict(figures or {})
    methodology = doc.get("methodology", {}) if "metrics" in doc else doc
    if "metrics" not in doc:
        doc = {}
    from greencert.compute.fold import power_fold
    from greencert.compute.integrate import energy_unit, integrate
    from greencert.compute.metrics import compute_figures
    from greencert.units import as_array

    m = bundle.manifest
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    fig = compute_figures(bundle, scheme)
    power, unit = power_fold(bundle, scheme).integrated, energy_unit(m.power, "power")
    tokens_in = integrate(bundle.tokens, "input_tokens", "counter", start, end, np.inf)
    hours = power.hour_seconds
    return DayPartial(
        scope=m.scope.model_dump(mode="json", exclude_none=True),
        start=stamp(m.period.start),
        end=stamp(m.period.end),
        scheme={"id": scheme.id, "version": scheme.version},
        hour_start=np.asarray(fig.hour_starts, dtype=np.float64),
        it_energy_kwh=np.asarray(fig.it_energy_hourly_kwh, dtype=np.float64),
        facility_energy_kwh=np.asarray(fig.facility_energy_hourly_kwh, dtype=np.float64),
        grid_intensity=np.asarray(fig.intensity_hourly, dtype=np.float64),
        output_tokens=np.asarray(fig.output_tokens_hourly, dtype=np.float64),
        input_tokens=tokens_in.per_hour.sum(axis=0),
        devices=list(power.devices),
        device_energy_kwh=as_array(power.per_hour, unit).to("kWh").magnitude,
        covered_device_seconds=math.fsum(power.covered_seconds.ravel()),
        possible_device_seconds=float(hours.sum()) * len(power.devices),
        pue_basis=fig.pue_basis,
        grid_basis=fig.grid_basis,
        validation=validation,
        inputs=bundle.inputs,
        methodology=dict(methodology or {}),
        figures=doc,
    )


@dataclass(frozen=True)
class Combined:
    """A longer period's figures from its partials (hourly arrays concatenated, totals fsum-ed)."""

    scope: dict[str, Any]
    start: str
    end: str
    hour_start: np.ndarray
    it_energy_hourly_kwh: np.ndarray
    facility_energy_hourly_kwh: np.ndarray
    intensity_hourly: np.ndarray
    output_tokens_hourly: np.ndarray
    input_tokens_hourly: np.ndarray
    device_energy_kwh: dict[str, float]
    it_energy_kwh: float
    facility_energy_kwh: float
    output_tokens: float
    input_tokens: float
    operational_carbon_g: float
    coverage: float
    days: int
    pue_basis: str
    grid_basis: str

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Headline metrics in the certificate's units, converted with the one pint registry."""
        from greencert.units import Q_, significant

        facility = Q_(self.facility_energy_kwh, "kWh")
        tokens = Q_(self.output_tokens, "token")
        carbon = Q_(self.operational_carbon_g, "gCO2e")
        figures = {
            "it_energy": (Q_(self.it_energy_kwh, "kWh"), "kWh"),
            "facility_energy": (facility, "kWh"),
            "output_tokens": (tokens, "token"),
            "input_tokens": (Q_(self.input_tokens, "token"), "token"),
            "energy_per_million_tokens": (facility / tokens, "kWh/Mtok"),
            "carbon_per_million_tokens": (carbon / tokens, "gCO2e/Mtok"),
            "operational_carbon": (carbon, "gCO2e"),
        }
        return {
            name: {"value": significant(q.to(u).magnitude), "unit": u} for name, (q, u) in figures.items()
        }


def _check_sequence(partials: list[DayPartial]) -> None:
    from greencert.errors import BundleError

    if not partials:
        raise BundleError("no day partials to combine", "partials")
    first = partials[0]
    for p in partials[1:]:
        for key in ("site", "deployment", "model"):
            if p.scope.get(key) != first.scope.get(key):
                raise BundleError(
                    f"partials of different {key}s ({first.scope.get(key)!r}, {p.scope.get(key)!r})",
                    f"partial {p.start}",
                )
        if p.scheme != first.scheme:
            raise BundleError(
                f"partials graded under different schemes ({first.scheme}, {p.scheme})", p.start
            )
    for a, b in zip(partials, partials[1:], strict=False):
        if a.end != b.start:
            raise BundleError(
                f"partials are not contiguous: {a.start}..{a.end} then {b.start}..{b.end}"
                + (" (a day is missing)" if a.end < b.start else " (overlap)"),
                f"partial {b.start}",
            )
    for p in partials:
        if not p.validation.get("success"):
            raise BundleError("a day's bundle did not pass validation", f"partial {p.start}")


def combine(partials: list[DayPartial]) -> Combined:
    """Figures of the whole span of ``partials`` (contiguous, same deployment and scheme)."""
    partials = sorted(partials, key=lambda p: p.start)
    _check_sequence(partials)
    cat = lambda name: np.concatenate([getattr(p, name) for p in partials])  # noqa: E731
    facility = cat("facility_energy_kwh")
    intensity = cat("grid_intensity")
    device_energy: dict[str, list[float]] = {}
    for p in partials:
        for name, row in zip(p.devices, p.device_energy_kwh, strict=True):
            device_energy.setdefault(name, []).extend(row.tolist())
    covered = math.fsum(p.covered_device_seconds for p in partials)
    possible = math.fsum(p.possible_device_seconds for p in partials)
    bases = {p.pue_basis for p in partials}
    grids = {p.grid_basis for p in partials}
    return Combined(
        scope=partials[0].scope,
        start=partials[0].start,
        end=partials[-1].end,
        hour_start=cat("hour_start"),
        it_energy_hourly_kwh=cat("it_energy_kwh"),
        facility_energy_hourly_kwh=facility,
        intensity_hourly=intensity,
        output_tokens_hourly=cat("output_tokens"),
        input_tokens_hourly=cat("input_tokens"),
        device_energy_kwh={name: math.fsum(v) for name, v in sorted(device_energy.items())},
        it_energy_kwh=math.fsum(cat("it_energy_kwh")),
        facility_energy_kwh=math.fsum(facility),
        output_tokens=math.fsum(cat("output_tokens")),
        input_tokens=math.fsum(cat("input_tokens")),
        operational_carbon_g=math.fsum(facility * intensity),
        coverage=covered / possible if possible > 0 else 0.0,
        days=len(partials),
        pue_basis=bases.pop() if len(bases) == 1 else "mixed",
        grid_basis=grids.pop() if len(grids) == 1 else "mixed",
    )


def save_partial(partial: DayPartial, folder: Path, data: bytes | None = None) -> Path:
    """Write ``<folder>/<deployment>/<start day>.json`` atomically; return its path (idempotent).

    ``data``: ``partial.to_json()`` computed beforehand (a fleet run serialises while it waits).
    """
    from greencert.atomic import atomic_write_bytes

    path = Path(folder) / partial.scope["deployment"] / f"{partial.start[:10]}.json"
    atomic_write_bytes(path, partial.to_json() if data is None else data)
    return path


def load_partials(paths: list[Path]) -> list[DayPartial]:
    return [DayPartial.from_json(Path(p).read_bytes(), str(p)) for p in paths]


def month_figures_document(
    partial_paths: list[Path], scheme: Any
) -> tuple[dict[str, Any], list[dict[str, str]], dict[str, Any]]:
    """The figures document of the combined period, its evidence inputs and its validation record.

    The month's evidence is its daily partials (each records the sha256 of its
    day's bundle files and that the bundle passed validation).
    """
    partials = load_partials(partial_paths)
    comb = combine(partials)
    if any(p.scheme != {"id": scheme.id, "version": scheme.version} for p in partials):
        from greencert.errors import ConfigError

        raise ConfigError(
            f"partials were computed under scheme {partials[0].scheme}, not {scheme.id} {scheme.version}"
        )
    inputs = [
        {"file": Path(p).name, "sha256": hashlib.sha256(Path(p).read_bytes()).hexdigest()}
        for p in sorted(partial_paths, key=lambda p: Path(p).name)
    ]
    n_eval = sum(int(p.validation.get("expectations_evaluated", 0)) for p in partials)
    rows: dict[str, int] = {}
    for p in partials:
        for name, n in p.validation.get("rows", {}).items():
            rows[name] = rows.get(name, 0) + int(n)
    # The days' methodology (same bundle layout every day), with the period's own PUE and the
    # energy-weighted share of hours with an hourly grid intensity.
    methodology = dict(partials[-1].methodology)
    day_energy = [math.fsum(p.facility_energy_kwh) for p in partials]
    shares = [
        float(p.methodology.get("hourly_intensity_share", 1.0 if p.grid_basis == "hourly" else 0.0))
        for p in partials
    ]
    total_energy = math.fsum(day_energy)
    methodology.update(
        {
            "pue": round(comb.facility_energy_kwh / comb.it_energy_kwh, 9)
            if comb.it_energy_kwh > 0
            else None,
            "pue_basis": comb.pue_basis,
            "grid_basis": comb.grid_basis,
            "hourly_intensity_share": (
                math.fsum(s * e for s, e in zip(shares, day_energy, strict=True)) / total_energy
                if total_energy > 0
                else 0.0
            ),
            "combination": f"sum of {comb.days} daily partials, hour by hour (greencert.compute.partials)",
        }
    )
    period = {"start": to_utc(comb.start).isoformat(), "end": to_utc(comb.end).isoformat()}
    without = [p.start[:10] for p in partials if not p.figures]
    if without:
        from greencert.errors import BundleError

        raise BundleError(
            f"{len(without)} day partial(s) carry no figures document (format /1, first {without[0]}): "
            "a period certificate states every section of its days; certify those days again",
            "partials",
        )
    from greencert.compute.period import combine_days

    # Every section of the days (carbon, cross-checks, reconciliation, load regime, boundary, water,
    # per query, 95 % intervals), combined by compute/period.py's rules; the headline figures come
    # from the hourly sums above (exact).
    sections = combine_days([p.figures for p in partials], comb.metrics(), period)
    figures = {
        "scope": comb.scope,
        "period": period,
        "methodology": methodology,
        **{k: v for k, v in sections.items() if k != "data_quality"},
        "data_quality": {
            "coverage": round(comb.coverage, 9),
            "validation_success": True,
            "validation_report": "validation.json",
            "expectations_evaluated": n_eval,
            "rows": rows,
            "devices": len(comb.device_energy_kwh),
            "days": comb.days,
            **sections["data_quality"],
        },
        "hourly": {
            "hour_start": [int(h) for h in comb.hour_start],
            "facility_energy_kwh": [float(f"{v:.9g}") for v in comb.facility_energy_hourly_kwh],
            "output_tokens": [float(f"{v:.12g}") for v in comb.output_tokens_hourly],
            "grid_intensity_gco2e_per_kwh": [float(f"{v:.9g}") for v in comb.intensity_hourly],
        },
        "inputs": inputs,
    }
    validation = {
        "success": True,
        "validator": "great_expectations (daily)",
        "days": [{"period": {"start": p.start, "end": p.end}, **p.validation} for p in partials],
        "inputs": inputs,
        "scheme": {"id": scheme.id, "version": scheme.version},
    }
    return figures, inputs, validation

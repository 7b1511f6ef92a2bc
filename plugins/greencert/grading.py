"""Grading: place certified figures in the A-G bands of a versioned scheme."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from greencert.errors import ConfigError
from greencert.units import Q_

SCHEME_DIR = Path(__file__).parent / "schemes"
DEFAULT_SCHEME = SCHEME_DIR / "greencert-2026.1.yaml"


@dataclass(frozen=True)
class SizeClass:
    name: str
    max_active_params_billions: float | None
    energy_band_edges: tuple[float, ...]


@dataclass(frozen=True)
class Scheme:
    id: str
    version: str
    grades: tuple[str, ...]
    size_classes: tuple[SizeClass, ...]
    carbon_reference_intensity: float  # gCO2e/kWh
    min_coverage: float
    max_gap_seconds: float
    max_device_power_w: float
    max_counter_reset_share: float
    max_grid_intensity: float  # gCO2e/kWh
    validity_months: int
    raw: dict[str, Any]
    path: Path

    def size_class(self, active_params_billions: float) -> SizeClass:
        for cls in self.size_classes:
            if (
                cls.max_active_params_billions is None
                or active_params_billions <= cls.max_active_params_billions
            ):
                return cls
        return self.size_classes[-1]

    def carbon_band_edges(self, cls: SizeClass) -> tuple[float, ...]:
        return tuple(edge * self.carbon_reference_intensity for edge in cls.energy_band_edges)


def band(value: float, edges: tuple[float, ...], grades: tuple[str, ...]) -> str:
    """Grade of ``value``: the first band whose upper edge it does not exceed."""
    for edge, grade in zip(edges, grades, strict=False):
        if value <= edge:
            return grade
    return grades[len(edges)]


@functools.cache
def load_scheme(path: Path | str = DEFAULT_SCHEME) -> Scheme:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read grading scheme ({exc})", str(path)) from None
    try:
        dq = raw["data_quality"]
        grades = tuple(raw["grades"])
        classes = tuple(
            SizeClass(
                c["name"], c["max_active_params_billions"], tuple(float(e) for e in c["energy_band_edges"])
            )
            for c in raw["size_classes"]
        )
        for cls in classes:
            if len(cls.energy_band_edges) != len(grades) - 1 or list(cls.energy_band_edges) != sorted(
                cls.energy_band_edges
            ):
                raise ConfigError(
                    f"size class {cls.name}: need {len(grades) - 1} increasing band edges", str(path)
                )
        return Scheme(
            id=str(raw["id"]),
            version=str(raw["version"]),
            grades=grades,
            size_classes=classes,
            carbon_reference_intensity=Q_(raw["carbon_reference_intensity"]).to("gCO2e/kWh").magnitude,
            min_coverage=float(dq["min_coverage"]),
            max_gap_seconds=Q_(dq["max_gap"]).to("s").magnitude,
            max_device_power_w=Q_(dq["max_device_power"]).to("W").magnitude,
            max_counter_reset_share=float(dq["max_counter_reset_share"]),
            max_grid_intensity=Q_(dq["max_grid_intensity"]).to("gCO2e/kWh").magnitude,
            validity_months=int(raw["validity"]["months"]),
            raw=raw,
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"grading scheme is incomplete or malformed ({exc!r})", str(path)) from None


def scheme_by_version(scheme_id: str, version: str) -> Scheme:
    for candidate in sorted(SCHEME_DIR.glob("*.yaml")):
        scheme = load_scheme(candidate)
        if scheme.id == scheme_id and scheme.version == version:
            return scheme
    raise ConfigError(f"no grading scheme {scheme_id} version {version} in {SCHEME_DIR}")


def grade(
    energy_per_mtok_kwh: float, carbon_per_mtok_g: float, active_params_billions: float, scheme: Scheme
) -> dict:
    """Grade both figures; the overall grade is the worse of the two."""
    cls = scheme.size_class(active_params_billions)
    energy_grade = band(energy_per_mtok_kwh, cls.energy_band_edges, scheme.grades)
    carbon_edges = scheme.carbon_band_edges(cls)
    carbon_grade = band(carbon_per_mtok_g, carbon_edges, scheme.grades)
    overall = max(energy_grade, carbon_grade, key=scheme.grades.index)
    return {
        "overall": overall,
        "energy": energy_grade,
        "carbon": carbon_grade,
        "size_class": cls.name,
        "energy_band_edges": {"unit": "kWh/Mtok", "upper_edges": list(cls.energy_band_edges)},
        "carbon_band_edges": {"unit": "gCO2e/Mtok", "upper_edges": [round(e, 6) for e in carbon_edges]},
    }

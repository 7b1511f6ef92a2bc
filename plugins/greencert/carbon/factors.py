"""The packaged offline factors (``data/carbon_factors.yaml``): each with value, unit, year and source."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.errors import ConfigError
from greencert.units import Q_
from greencert.yamlio import load_yaml_file

FACTORS_FILE = Path(__file__).resolve().parents[1] / "data" / "carbon_factors.yaml"
FORMAT = "greencert-carbon-factors/1"


@dataclass(frozen=True)
class AnnualFactor:
    key: str
    name: str
    value: float
    unit: str
    year: int
    emission_factor_type: str
    source: str

    @property
    def g_per_kwh(self) -> float:
        return float(Q_(self.value, self.unit).to("gCO2e/kWh").magnitude)

    def as_manifest_grid(self) -> dict[str, Any]:
        """The manifest ``grid:`` section of a bundle computed from this annual factor."""
        return {
            "annual": round(self.g_per_kwh, 6),
            "unit": "gCO2e/kWh",
            "source": f"{self.source}; {self.name}; {self.emission_factor_type}; offline default {self.key}",
            "year": self.year,
            "zone": self.key,
        }

    def as_factor(self) -> dict[str, Any]:
        """The manifest ``carbon.residual_mix`` form of this factor."""
        return {
            "value": self.value,
            "unit": self.unit,
            "source": f"{self.source}; offline default {self.key}",
            "year": self.year,
            "emission_factor_type": self.emission_factor_type,
        }


@functools.cache
def load_factors(path: Path = FACTORS_FILE) -> dict[str, Any]:
    data = load_yaml_file(Path(path), ConfigError, "carbon factors")  # strict: duplicate keys are errors
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"not a {FORMAT} file", str(path))
    return data


def _annual(table: str, key: str) -> AnnualFactor:
    entries = load_factors()[table]
    if key not in entries:
        raise ConfigError(
            f"no offline {table.replace('_', ' ')} factor {key!r}; known: {', '.join(sorted(entries))}",
            str(FACTORS_FILE),
        )
    e = entries[key]
    return AnnualFactor(
        key, e["name"], float(e["value"]), e["unit"], int(e["year"]), e["emission_factor_type"], e["source"]
    )


def grid_factor(key: str) -> AnnualFactor:
    """Annual location-based factor for a country or grid region (e.g. ``CN``, ``CN-East``, ``DE``)."""
    return _annual("grid", key)


def residual_mix_factor(key: str) -> AnnualFactor | None:
    """Residual-mix default for a region, or None when the file has none (grid average is used then)."""
    entries = load_factors().get("residual_mix") or {}
    return _annual("residual_mix", key) if key in entries else None


def embodied_profile(name: str | None = None) -> tuple[str, dict[str, Any]]:
    section = load_factors()["embodied"]
    name = name or section["default_profile"]
    if name not in section["profiles"]:
        raise ConfigError(f"no embodied profile {name!r}", str(FACTORS_FILE))
    return name, section["profiles"][name]

"""The application's pint registry: custom units and unit regressions."""

from __future__ import annotations

import pint
import pytest

from greencert.errors import BundleError
from greencert.units import ENERGY, POWER, Q_, parse_unit, ureg


def test_one_application_registry() -> None:
    # Quantities built anywhere through pint's application registry share our units.
    assert pint.get_application_registry().Quantity(1, "Mtok").to("token").magnitude == pytest.approx(1e6)
    assert ureg.Unit("gCO2e").dimensionality == ureg.get_dimensionality("[carbon]")
    assert Q_(1, "Mtok").to("token").magnitude == pytest.approx(1e6)


def test_carbon_units() -> None:
    assert Q_(1, "tCO2e").to("gCO2e").magnitude == pytest.approx(1e6)
    assert Q_(1, "kgCO2e").to("gCO2e").magnitude == pytest.approx(1e3)
    # 130 kg per billion tokens is 130 g per million tokens (not 0.13).
    assert (Q_(130, "kgCO2e") / Q_(1e9, "token")).to("gCO2e/Mtok").magnitude == pytest.approx(130.0)
    # 1 lb/MWh = 453.59237 g / 1000 kWh.
    assert Q_(1, "lbCO2e/MWh").to("gCO2e/kWh").magnitude == pytest.approx(0.45359237)


def test_energy_per_token_conversions() -> None:
    # 1 J/token = 1e6 J/Mtok = 1e6 / 3.6e6 kWh/Mtok.
    assert Q_(1, "J/token").to("kWh/Mtok").magnitude == pytest.approx(1 / 3.6)


@pytest.mark.parametrize(("text", "dim"), [("W", POWER), ("kW", POWER), ("mJ", ENERGY), ("kWh", ENERGY)])
def test_parse_unit_accepts(text: str, dim: str) -> None:
    parse_unit(text, dim, "power.unit")


@pytest.mark.parametrize(
    ("text", "dim", "fragment"),
    [("Wattz", POWER, "unknown unit"), ("W", ENERGY, "dimension"), ("kWh", POWER, "dimension"), ("", POWER, "required")],
)
def test_parse_unit_rejects_with_location(text: str, dim: str, fragment: str) -> None:
    with pytest.raises(BundleError) as err:
        parse_unit(text, dim, "power.unit")
    assert fragment in str(err.value)
    assert "power.unit" in str(err.value)

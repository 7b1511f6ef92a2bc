"""The one pint registry of the application.

Following pint's "pint in your projects" guidance there is exactly one
``UnitRegistry`` for the whole package; every module imports ``ureg`` from
here. Two domain units are defined once:

* ``token`` (symbol ``tok``), its own base dimension ``[tokens]``, so prefixes
  such as ``Mtok`` (10^6 tokens) work;
* ``gCO2e``, a mass of CO2-equivalent with its own dimension ``[carbon]``, so a
  carbon figure can never be added to a plain mass by accident; ``kgCO2e`` and
  ``tCO2e`` follow.
"""

from __future__ import annotations

import numpy as np
import pint

from greencert.errors import BundleError


class _Registry(pint.UnitRegistry):
    """pint's registry, remembering how each unit string parses.

    pint caches a parsed string only when the string is itself a defined unit
    name (its workaround for pint issue #1097, units defined inside contexts,
    which GreenCert does not use), so "kWh", "gCO2e/kWh" or "kWh/Mtok" are
    parsed again, prefix search included, at every ``.to()``: that was a fifth
    of a fleet-day's per-bundle CPU time. The parsed containers are immutable;
    the memo is dropped whenever a unit is defined.
    """

    def _parse_units_as_container(self, input_string, as_delta=True, case_sensitive=True):
        memo = self.__dict__.setdefault("_greencert_parsed", {})
        key = (input_string, as_delta, case_sensitive)
        parsed = memo.get(key)
        if parsed is None:
            parsed = super()._parse_units_as_container(input_string, as_delta, case_sensitive)
            memo[key] = parsed
        return parsed

    def define(self, definition):
        self.__dict__.get("_greencert_parsed", {}).clear()
        return super().define(definition)


ureg: pint.UnitRegistry = _Registry(cache_folder=None)
ureg.define("token = [tokens] = tok")
ureg.define("query = [queries]")  # one completed request; kquery = 1,000 (figures per 1,000 queries)
ureg.define("gCO2e = [carbon] = gCO2eq")
ureg.define("kgCO2e = 1000 * gCO2e = kgCO2eq")
ureg.define("tCO2e = 1000000 * gCO2e = tCO2eq")
# US customary pound of CO2e, for WattTime's lbs/MWh marginal rates.
ureg.define("lbCO2e = 453.59237 * gCO2e = lbsCO2e")
pint.set_application_registry(ureg)

Q_ = ureg.Quantity

POWER = "[power]"
ENERGY = "[energy]"


def parse_unit(text: object, dimension: str, where: str) -> pint.Unit:
    """Parse a unit string from the manifest and check its dimension.

    ``where`` names the manifest key, so that a typo such as ``Wattz`` or an
    energy unit declared for a gauge produces an error that points at it.
    """
    if not isinstance(text, str) or not text.strip():
        raise BundleError(f"a unit is required (got {text!r})", where)
    try:
        unit = ureg.Unit(text.strip())
    except Exception as exc:  # pint raises many types (even AssertionError) on junk
        raise BundleError(f"unknown unit {text!r} ({exc})", where) from None
    expected = ureg.get_dimensionality(dimension)
    if unit.dimensionality != expected:
        raise BundleError(
            f"unit {text!r} has dimension {unit.dimensionality}, expected {expected}",
            where,
        )
    return unit


def parse_quantity(text: object, dimension: str, where: str) -> pint.Quantity:
    """Parse a non-negative quantity such as "164 kgCO2e" or "3 year" and check its dimension."""
    if not isinstance(text, str) or not text.strip():
        raise BundleError(f"a quantity with a unit is required (got {text!r})", where)
    try:
        q: pint.Quantity = ureg.Quantity(text)
    except Exception as exc:  # pint raises many types on junk
        raise BundleError(f"{text!r} is not a quantity with a unit ({exc})", where) from None
    if not isinstance(q, ureg.Quantity) or q.dimensionality != ureg.get_dimensionality(dimension):
        raise BundleError(f"{text!r} is not a {dimension} quantity", where)
    if q.magnitude < 0:
        raise BundleError(f"{text!r} is negative", where)
    return q


def as_array(values: np.ndarray, unit: pint.Unit | str) -> pint.Quantity:
    """Wrap a whole numpy array in one Quantity (never one Quantity per row)."""
    return Q_(np.asarray(values, dtype=np.float64), unit)


def significant(value: float, digits: int = 12) -> float:
    """``value`` rounded to ``digits`` significant digits, as published figures are.

    12 digits (the default) is stable across platforms and far below any meter's accuracy; findings
    and disclosures round to fewer.
    """
    return float(f"{float(value):.{digits}g}")

"""Read and check the files and units the manifest's ``carbon:`` section names.

Called from ``bundle.reader.open_bundle`` so these files are hashed into the
bundle's inputs (``greencert verify`` checks them) and copied with the
evidence, and so bad carbon inputs fail the validate stage, before any figure
is computed, with an error that names the file, line and time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pint

from greencert.bundle.reader import Series, read_series
from greencert.errors import BundleError
from greencert.units import ureg

PROFILE_COLUMNS = ("timestamp", "energy")
MARGINAL_COLUMNS = ("timestamp", "rate")
INTENSITY = "[carbon] / [energy]"


def unit_of(text: str, dimension: str, where: str) -> pint.Unit:
    try:
        unit = ureg.Unit(text.strip())
    except Exception as exc:  # pint raises many types on junk
        raise BundleError(f"unknown unit {text!r} ({exc})", where) from None
    if unit.dimensionality != ureg.get_dimensionality(dimension):
        raise BundleError(f"unit {text!r} is not a {dimension} unit", where)
    return unit


def quantity_of(text: str, dimension: str, where: str) -> pint.Quantity:
    """Parse "164 kgCO2e" or "3 year" and check its dimension."""
    try:
        q = ureg.Quantity(text)
    except Exception as exc:
        raise BundleError(f"{text!r} is not a quantity with a unit ({exc})", where) from None
    if not isinstance(q, ureg.Quantity) or q.dimensionality != ureg.get_dimensionality(dimension):
        raise BundleError(f"{text!r} is not a {dimension} quantity", where)
    if q.magnitude < 0:
        raise BundleError(f"{text!r} is negative", where)
    return q


def check_hourly(series: Series, column: str, what: str) -> None:
    """Every row finite, non-negative, on a UTC hour, strictly increasing in time."""
    t, v = series.t, series.values[column]
    checks = (
        (~np.isfinite(t), "timestamp is missing or not a number"),
        (~np.isfinite(v), f"{column} is missing, NaN or infinite"),
        (v < 0, f"{column} is negative"),
        (np.mod(np.nan_to_num(t), 3600.0) != 0, "timestamp is not at the start of a UTC hour"),
    )
    for bad, problem in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise BundleError(f"{what}: {problem}", series.where_row(i))
    if t.size > 1 and (np.diff(t) <= 0).any():
        i = int(np.argmax(np.diff(t) <= 0)) + 1
        raise BundleError(
            f"{what}: timestamps must strictly increase (duplicate or out of order)", series.where_row(i)
        )


def check_units(manifest) -> None:
    """Fail early, naming the manifest key, on any unit of the carbon section that is wrong."""
    spec = manifest.carbon
    if spec is None:
        return
    base = "manifest.yaml carbon"
    for n, inst in enumerate(spec.instruments):
        where = f"{base}.instruments[{n}] ({inst.id})"
        if inst.volume is not None:
            quantity_of(inst.volume, "[energy]", f"{where}.volume")
        unit_of(inst.profile_unit, "[energy]", f"{where}.profile_unit")
        if inst.emission_factor is not None:
            unit_of(inst.emission_factor.unit, INTENSITY, f"{where}.emission_factor.unit")
    if spec.residual_mix is not None:
        unit_of(spec.residual_mix.unit, INTENSITY, f"{base}.residual_mix.unit")
    if spec.embodied is not None:
        for n, item in enumerate(spec.embodied.hardware):
            where = f"{base}.embodied.hardware[{n}] ({item.item})"
            quantity_of(item.embodied, "[carbon]", f"{where}.embodied")
            life = quantity_of(item.lifetime, "[time]", f"{where}.lifetime")
            if life.magnitude <= 0:
                raise BundleError("lifetime must be positive", f"{where}.lifetime")
    if spec.marginal is not None:
        unit_of(spec.marginal.unit, INTENSITY, f"{base}.marginal.unit")


def read_carbon_series(manifest, path_of: Callable[[str], Path]) -> dict[str, Series]:
    """Instrument delivery profiles and the marginal series, keyed by file name."""
    check_units(manifest)
    spec = manifest.carbon
    out: dict[str, Series] = {}
    if spec is None:
        return out
    for inst in spec.instruments:
        if inst.profile_file:
            what = f"delivery profile of instrument {inst.id}"
            series = read_series(path_of(inst.profile_file), PROFILE_COLUMNS, (), ("energy",), None, what)
            check_hourly(series, "energy", what)
            out[inst.profile_file] = series
    if spec.marginal is not None:
        what = "marginal emission rates"
        series = read_series(path_of(spec.marginal.file), MARGINAL_COLUMNS, (), ("rate",), None, what)
        check_hourly(series, "rate", what)
        out[spec.marginal.file] = series
    return out

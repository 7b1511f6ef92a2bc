"""Open an evidence bundle: its manifest and every series file it names (``bundle/series.py``).

The power series, the one that grows with a deployment, is indexed here and read later in device
shards (``bundle/shards.py``, docs/streaming.md); the other series are read whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greencert.bundle.manifest import Manifest, load_manifest
from greencert.bundle.series import (
    GRID_COLUMNS,
    GRID_OPTIONAL_COLUMNS,
    INTENSITY,
    MARGINAL_COLUMNS,
    METER_COLUMNS,
    POWER_COLUMNS,
    PROFILE_COLUMNS,
    REQUEST_COLUMNS,
    TOKEN_COLUMNS,
    TOKEN_TYPE_COLUMNS,
    Series,
    read_series,
    sha256_file,
)
from greencert.bundle.shards import ROWS_PER_SHARD, DeviceShards, read_device_shards
from greencert.errors import BundleError
from greencert.units import parse_quantity, parse_unit

__all__ = [
    "POWER_COLUMNS",
    "TOKEN_COLUMNS",
    "Bundle",
    "DeviceShards",
    "Series",
    "open_bundle",
    "read_series",
    "sha256_file",
]


@dataclass
class Bundle:
    path: Path
    manifest: Manifest
    # Indexed, not read: the stages fold it shard by shard (compute/fold.py).
    power: DeviceShards
    tokens: Series
    grid: Series | None = None
    # Device-keyed meters are indexed and folded in shards like the power series (node meters of a
    # large deployment are millions of rows).
    facility_meter: DeviceShards | None = None
    it_meter: DeviceShards | None = None
    meters: dict[str, DeviceShards] = field(default_factory=dict)
    inputs: list[dict[str, str]] = field(default_factory=list)
    # Series named by the manifest's carbon section (instrument profiles, marginal rates).
    carbon_series: dict[str, Series] = field(default_factory=dict)
    # Running-requests gauge (manifest ``concurrency:``), for the load-regime disclosure.
    concurrency: Series | None = None
    # Completed-requests counter (manifest ``requests:``), for the figures per 1,000 queries.
    requests: Series | None = None
    # The power series folded under a scheme, keyed by what the fold computes (compute/fold.py).
    folds: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)


def open_bundle(bundle_dir: Path | str, rows_per_shard: int = ROWS_PER_SHARD) -> Bundle:
    """Read manifest and every file it names; raise BundleError on the first problem.

    The power series is indexed and read later in shards of about ``rows_per_shard`` rows
    (``bundle/shards.py``): the certificate is the same bytes for any shard size.
    """
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError("evidence bundle folder does not exist", str(bundle_dir))
    manifest = load_manifest(bundle_dir)
    files = {"manifest.yaml": bundle_dir / "manifest.yaml"}

    def path_of(name: str) -> Path:
        files[name] = bundle_dir / name
        return bundle_dir / name

    m = manifest
    power = read_device_shards(
        path_of(m.power.file), POWER_COLUMNS, (), ("value",), "device", "power", rows_per_shard
    )
    tokens = read_series(
        path_of(m.tokens.file),
        TOKEN_COLUMNS,
        ("instance", *TOKEN_TYPE_COLUMNS),
        ("output_tokens", "input_tokens", *TOKEN_TYPE_COLUMNS),
        "instance",
        "tokens",
    )
    check_token_types(tokens)
    grid = None
    if m.grid.file:
        grid = read_series(
            path_of(m.grid.file), GRID_COLUMNS, GRID_OPTIONAL_COLUMNS, ("intensity",), None, "grid"
        )

    def meter(name: str, what: str) -> DeviceShards:
        return read_device_shards(
            path_of(name), METER_COLUMNS, ("device",), ("value",), "device", what, rows_per_shard
        )

    facility_meter = it_meter = None
    if m.facility.meter is not None and m.facility.it_meter is not None:
        facility_meter = meter(m.facility.meter.file, "facility meter")
        it_meter = meter(m.facility.it_meter.file, "IT meter")
    meters = {spec.name: meter(spec.file, f"meter {spec.name}") for spec in m.meters}
    carbon_series = read_carbon_series(m, path_of)
    concurrency = None
    if m.concurrency is not None:
        concurrency = read_series(
            path_of(m.concurrency.file), METER_COLUMNS, ("instance",), ("value",), "instance", "concurrency"
        )
    requests = None
    if m.requests is not None:
        requests = read_series(
            path_of(m.requests.file), REQUEST_COLUMNS, ("instance",), ("requests",), "instance", "requests"
        )
    inputs = [{"file": name, "sha256": sha256_file(p)} for name, p in sorted(files.items())]
    digests = {i["file"]: i["sha256"] for i in inputs}
    for shards in (power, facility_meter, it_meter, *meters.values()):
        if shards is not None:
            shards.sha256 = digests[shards.file]
    return Bundle(
        bundle_dir,
        manifest,
        power,
        tokens,
        grid,
        facility_meter,
        it_meter,
        meters,
        inputs,
        carbon_series,
        concurrency,
        requests,
    )


def check_token_types(series: Series) -> None:
    """Token-type counters, where present, are finite and non-negative (the GX suite checks the others)."""
    for column in TOKEN_TYPE_COLUMNS:
        v = series.values.get(column)
        if v is None:
            continue
        bad = ~np.isfinite(v) | (np.nan_to_num(v) < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise BundleError(
                f"token-type counter {column} is missing, NaN, infinite or negative ({v[i]!r})",
                f"{series.where_row(i)} column {column}",
            )


# --- the manifest's carbon section -------------------------------------------------------------------
# Read here, with the other series, so these files are hashed into the bundle's inputs (``greencert
# verify`` checks them) and copied with the evidence, and so bad carbon inputs fail the validate
# stage, before any figure is computed, with an error that names the file, line and time.


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


def check_carbon_units(manifest: Manifest) -> None:
    """Fail early, naming the manifest key, on any unit of the carbon section that is wrong."""
    spec = manifest.carbon
    if spec is None:
        return
    base = "manifest.yaml carbon"
    for n, inst in enumerate(spec.instruments):
        where = f"{base}.instruments[{n}] ({inst.id})"
        if inst.volume is not None:
            parse_quantity(inst.volume, "[energy]", f"{where}.volume")
        parse_unit(inst.profile_unit, "[energy]", f"{where}.profile_unit")
        if inst.emission_factor is not None:
            parse_unit(inst.emission_factor.unit, INTENSITY, f"{where}.emission_factor.unit")
    if spec.residual_mix is not None:
        parse_unit(spec.residual_mix.unit, INTENSITY, f"{base}.residual_mix.unit")
    if spec.embodied is not None:
        for n, item in enumerate(spec.embodied.hardware):
            where = f"{base}.embodied.hardware[{n}] ({item.item})"
            parse_quantity(item.embodied, "[carbon]", f"{where}.embodied")
            life = parse_quantity(item.lifetime, "[time]", f"{where}.lifetime")
            if life.magnitude <= 0:
                raise BundleError("lifetime must be positive", f"{where}.lifetime")
    if spec.marginal is not None:
        parse_unit(spec.marginal.unit, INTENSITY, f"{base}.marginal.unit")


def read_carbon_series(manifest: Manifest, path_of: Callable[[str], Path]) -> dict[str, Series]:
    """Instrument delivery profiles and the marginal series, keyed by file name."""
    check_carbon_units(manifest)
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

"""The fleet generator's days join up exactly, and a month combined from 30 daily partials equals the month
computed directly from all of its samples."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from greencert.bundle import open_bundle
from greencert.bundle.writer import write_bundle
from greencert.compute.metrics import compute_figures
from greencert.compute.partials import DayPartial, combine, day_partial, save_partial
from greencert.errors import BundleError
from greencert.fleet_day import deployment_bundles
from greencert.grading import SCHEME_DIR, load_scheme
from greencert.sources.fleet import FleetSpec, write_fleet_day

SCHEME = load_scheme(SCHEME_DIR / "greencert-2026.1.yaml")
# 2 nodes (16 GPUs), one deployment, a reading a minute: a month is small enough for a unit test.
SPEC = FleetSpec(scale=0.002, step_seconds=60.0)
MONTH = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
DAYS = 30
FILES = ("power", "nodes", "tokens", "facility", "it", "grid")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("fleet")
    days = [write_fleet_day(SPEC, MONTH + dt.timedelta(days=d), root) for d in range(DAYS)]
    return [deployment_bundles(day)[0] for day in days]


def test_full_size_fleet_is_the_issue_workload() -> None:
    spec = FleetSpec()
    assert (spec.nodes, spec.deployments) == (1_000, 50)
    assert all(len(spec.nodes_of(d)) == 20 for d in range(50))
    samples_per_day = 24 * 3600 // 15 + 1  # both ends of the day
    assert spec.nodes * 8 * samples_per_day == 46_088_000


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = write_fleet_day(SPEC, MONTH, tmp_path / "a")
    b = write_fleet_day(SPEC, MONTH, tmp_path / "b")
    for bundle in deployment_bundles(a):
        for f in (*FILES, "manifest"):
            name = f"{f}.yaml" if f == "manifest" else f"{f}.parquet"
            assert _sha(bundle / name) == _sha(b / bundle.name / name), name


def test_day_layout(month: list[Path]) -> None:
    power = pq.read_table(month[0] / "power.parquet")
    manifest = yaml.safe_load((month[0] / "manifest.yaml").read_text())
    per_device = 24 * 60 + 1
    assert power.num_rows == 16 * per_device
    assert len(manifest["power"]["devices"]) == 16
    assert manifest["facility"]["meter"]["file"] == "facility.parquet"
    index = json.loads((month[0].parent / "fleet.json").read_text())
    assert index["gpu_samples"] == 16 * per_device


def test_consecutive_days_share_their_boundary_sample_exactly(month: list[Path]) -> None:
    for before, after in zip(month, month[1:], strict=False):
        for f in FILES[:-1]:  # grid is hourly: its hours do not overlap
            a = pq.read_table(before / f"{f}.parquet")
            b = pq.read_table(after / f"{f}.parquet")
            boundary = pc.min(b.column("timestamp"))
            at_a = a.filter(pc.equal(a.column("timestamp"), boundary))
            at_b = b.filter(pc.equal(b.column("timestamp"), boundary))
            assert at_a.num_rows > 0
            assert at_a.to_pylist() == at_b.to_pylist(), (before.name, f)


def _month_bundle(days: list[Path], target: Path) -> Path:
    """All samples of the month in one bundle (each boundary sample once)."""
    manifest = yaml.safe_load((days[0] / "manifest.yaml").read_text())
    last = yaml.safe_load((days[-1] / "manifest.yaml").read_text())
    manifest["period"]["end"] = last["period"]["end"]
    tables = {}
    for f in FILES:
        parts = []
        for i, day in enumerate(days):
            table = pq.read_table(day / f"{f}.parquet")
            if i + 1 < len(days) and f != "grid":
                end = pq.read_table(days[i + 1] / f"{f}.parquet").column("timestamp")
                table = table.filter(pc.less(table.column("timestamp"), pc.min(end)))
            parts.append(table.cast(parts[0].schema) if parts else table)
        tables[f"{f}.parquet"] = pa.concat_tables(parts).unify_dictionaries()
    return write_bundle(target, manifest, tables)


def test_month_equals_the_sum_of_its_days(month: list[Path], tmp_path: Path) -> None:
    partials = [day_partial(open_bundle(day), SCHEME, {"success": True}) for day in month]
    comb = combine(partials)
    direct = compute_figures(open_bundle(_month_bundle(month, tmp_path / "month")), SCHEME)

    # Hour by hour the combination is the direct computation, to the last bit: each hour's
    # integral is the sum of the same steps whichever file holds them.
    assert comb.hour_start.size == DAYS * 24
    np.testing.assert_array_equal(comb.hour_start, direct.hour_starts)
    np.testing.assert_array_equal(comb.it_energy_hourly_kwh, direct.it_energy_hourly_kwh)
    np.testing.assert_array_equal(comb.facility_energy_hourly_kwh, direct.facility_energy_hourly_kwh)
    np.testing.assert_array_equal(comb.output_tokens_hourly, direct.output_tokens_hourly)
    np.testing.assert_array_equal(comb.intensity_hourly, direct.intensity_hourly)
    for name, kwh in direct.device_energy_kwh.items():
        assert comb.device_energy_kwh[name] == pytest.approx(kwh, rel=1e-12)

    # Totals: the month is the sum of the days (correctly rounded sums: exact, in any grouping).
    assert comb.it_energy_kwh == math.fsum(x for p in partials for x in p.it_energy_kwh)
    assert comb.it_energy_kwh == pytest.approx(
        math.fsum(math.fsum(p.it_energy_kwh) for p in partials), rel=1e-15
    )
    day_figures = [compute_figures(open_bundle(day), SCHEME) for day in month]
    assert comb.facility_energy_kwh == pytest.approx(
        sum(f.facility_energy.to("kWh").magnitude for f in day_figures), rel=1e-12
    )
    assert comb.output_tokens == sum(f.output_tokens.to("token").magnitude for f in day_figures)
    assert comb.output_tokens == direct.output_tokens.to("token").magnitude

    # Ratios come from the sums, never from averaging the days' ratios.
    month_metrics = comb.metrics()
    direct_metrics = direct.metrics()
    for name in ("it_energy", "facility_energy", "output_tokens", "input_tokens"):
        assert month_metrics[name]["value"] == pytest.approx(direct_metrics[name]["value"], rel=1e-12), name
    for name in ("energy_per_million_tokens", "carbon_per_million_tokens", "operational_carbon"):
        assert month_metrics[name]["value"] == pytest.approx(direct_metrics[name]["value"], rel=1e-11), name
    mean_of_days = np.mean([f.energy_per_million_tokens.magnitude for f in day_figures])
    assert month_metrics["energy_per_million_tokens"]["value"] != pytest.approx(mean_of_days, rel=1e-9)


def test_partial_file_round_trip_is_exact(month: list[Path], tmp_path: Path) -> None:
    partial = day_partial(open_bundle(month[3]), SCHEME, {"success": True, "expectations_evaluated": 63})
    path = save_partial(partial, tmp_path)
    again = DayPartial.from_json(path.read_bytes())
    for field in (
        "it_energy_kwh",
        "facility_energy_kwh",
        "output_tokens",
        "input_tokens",
        "device_energy_kwh",
    ):
        np.testing.assert_array_equal(getattr(again, field), getattr(partial, field))
    assert again.covered_device_seconds == partial.covered_device_seconds


def test_a_missing_or_repeated_day_is_refused(month: list[Path]) -> None:
    partials = [day_partial(open_bundle(day), SCHEME, {"success": True}) for day in month[:4]]
    with pytest.raises(BundleError, match="a day is missing"):
        combine([partials[0], partials[2], partials[3]])
    with pytest.raises(BundleError, match="overlap"):
        combine([partials[0], partials[1], partials[1]])
    failed = day_partial(open_bundle(month[4]), SCHEME, {"success": False})
    with pytest.raises(BundleError, match="did not pass validation"):
        combine([*partials, failed])

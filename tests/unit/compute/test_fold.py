"""The power series folded shard by shard gives the same bits as the series read whole (compute/fold.py).

For every case the bundle is opened three or more ways: whole (one shard, the array engine of
before), one device per shard, and shards of a few thousand rows that start and end inside
Parquet row groups of another size. Validation statistics, the figures document (energy, carbon,
the 95 % intervals, gaps, sampling noise, idle time) and validation's failure messages must be
byte-identical: a device's figures come from its own rows only, and sums over devices are taken
after stacking, so nothing may depend on where the shards end.

Cases: the analytic golden cases (split over several devices), randomised gauge bundles with gaps,
lead-ins and tails (rows of a device in random file order of devices), the demo's simulated
deployments, a fleet-simulator deployment with node meters, and energy counters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import T0, make_manifest, write_golden_bundle
from greencert.bundle import open_bundle
from greencert.bundle.writer import write_bundle
from greencert.compute.fold import power_fold
from greencert.errors import ValidationFailed
from greencert.grading import DEFAULT_SCHEME, SCHEME_DIR, load_scheme
from greencert.pipeline import figures_document
from greencert.validation import validate_bundle

WHOLE = 10**12
SCHEMES = [DEFAULT_SCHEME, SCHEME_DIR / "greencert-2026.2.yaml"]


def _regroup(bundle: Path, row_group_size: int) -> None:
    """Rewrite power.parquet with small row groups, so shards start and end inside them."""
    path = bundle / "power.parquet"
    pq.write_table(pq.read_table(path), path, row_group_size=row_group_size)


def _documents(bundle: Path, scheme_path: Path, rows_per_shard: int) -> tuple[int, bytes, bytes]:
    scheme = load_scheme(scheme_path)
    b = open_bundle(bundle, rows_per_shard)
    report = validate_bundle(b, scheme)
    payload = {**report.to_dict(), "inputs": b.inputs}
    figures = figures_document(b, scheme, payload)
    fold = power_fold(b, scheme)
    stats = json.dumps(fold.profile.frame.to_dict(orient="list"), sort_keys=True).encode()
    # The fold's own arrays too, bit for bit: the published figures are rounded, these are not.
    digest = hashlib.sha256(stats)
    arrays = [fold.integrated.per_hour, fold.integrated.covered_seconds]
    if fold.gaps is not None:
        arrays += [fold.gaps.inner, fold.gaps.lead, fold.gaps.trail]
    if fold.noise_by_device_hour is not None:
        arrays.append(fold.noise_by_device_hour)
    if fold.idle is not None and fold.idle_mj is not None:
        arrays += [fold.idle.bounds, fold.idle_mj]
    # Meters (node meters, facility and IT meters) fold the same way.
    for meter in [*b.meters.values(), b.facility_meter, b.it_meter]:
        for meter_fold in [] if meter is None else meter.folds.values():
            arrays += [meter_fold.profile.frame.to_numpy(dtype=str), meter_fold.integrated.per_hour]
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return b.power.n_shards, json.dumps(figures, sort_keys=True).encode(), digest.digest()


def _assert_shard_independent(bundle: Path, sizes: list[int], scheme_path: Path = DEFAULT_SCHEME) -> None:
    n_whole, figures, stats = _documents(bundle, scheme_path, WHOLE)
    assert n_whole == 1
    for size in sizes:
        n, other_figures, other_stats = _documents(bundle, scheme_path, size)
        assert n > 1, f"rows_per_shard={size} should split the power series"
        assert other_stats == stats, f"validation statistics or fold arrays differ at rows_per_shard={size}"
        assert other_figures == figures, f"figures differ at rows_per_shard={size}"


def _gauge_bundle(target: Path, seed: int, counter: bool = False) -> Path:
    """Several devices, each with its own step, noise, gaps over max_gap, a late start or an early end."""
    rng = np.random.default_rng(seed)
    start = T0.timestamp()
    hours = int(rng.integers(2, 5))
    end = start + 3600.0 * hours
    names = [f"gpu{i:02d}" for i in range(int(rng.integers(3, 12)))]
    t_all, d_all, v_all = [], [], []
    for name in rng.permutation(names):  # devices in random file order, rows grouped per device
        step = float(rng.choice([5.0, 10.0, 15.0, 30.0]))
        lo = start + (float(rng.uniform(0, 50)) if rng.random() < 0.3 else 0.0)
        hi = end - (float(rng.uniform(0, 50)) if rng.random() < 0.3 else 0.0)
        t = np.arange(lo, hi + step / 2, step) + rng.uniform(-0.4, 0.4, int((hi - lo) / step + 1.5))
        t = np.sort(t)
        if rng.random() < 0.6 and t.size > 40:  # one gap longer than max_gap (120 s), within min_coverage
            a = int(rng.integers(5, t.size - 30))
            t = np.concatenate([t[:a], t[a + int(np.ceil(float(rng.uniform(130, 160)) / step)) :]])
        power = np.clip(
            300.0 + 250.0 * np.sin(t / float(rng.uniform(200, 2000))) + rng.normal(0, 20, t.size), 50, 700
        )
        value = 1e9 + np.concatenate([[0.0], np.cumsum(power[:-1] * np.diff(t))]) if counter else power
        t_all.append(t)
        d_all.append(np.full(t.size, name))
        v_all.append(value)
    t = np.concatenate(t_all)
    tok_t = np.arange(start, end + 7.5, 15.0)
    out = 1e5 + np.cumsum(rng.poisson(3000, tok_t.size)).astype(float)
    out[rng.random(tok_t.size) < 0.1] = np.nan  # filled below: idle steps need flat counters
    out = np.fmax.accumulate(np.nan_to_num(out, nan=0.0))
    manifest = make_manifest(
        T0,
        T0 + dt.timedelta(hours=hours),
        power={
            "file": "power.parquet",
            "kind": "counter" if counter else "gauge",
            "unit": "J" if counter else "W",
            "meter_class": "gpu_sensor",
        },
        ext="parquet",
        scope={"gpu_count": len(names)},
    )
    return write_bundle(
        target,
        manifest,
        {
            "power.parquet": {
                "timestamp": t,
                "device": np.concatenate(d_all),
                "value": np.concatenate(v_all),
            },
            "tokens.parquet": {"timestamp": tok_t, "output_tokens": out, "input_tokens": 3 * out},
        },
    )


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda p: p.stem)
def test_random_gauge_bundles_fold_to_the_same_bits(tmp_path: Path, seed: int, scheme: Path) -> None:
    bundle = _gauge_bundle(tmp_path / "b", seed)
    _regroup(bundle, 997)
    rows = open_bundle(bundle).power.n_rows
    _assert_shard_independent(bundle, [1, 1500, max(2, rows // 3)], scheme)


@pytest.mark.parametrize("seed", range(3))
def test_energy_counters_fold_to_the_same_bits(tmp_path: Path, seed: int) -> None:
    bundle = _gauge_bundle(tmp_path / "b", 100 + seed, counter=True)
    _regroup(bundle, 1024)
    _assert_shard_independent(bundle, [1, 2000])


@pytest.mark.parametrize(("kind", "unit"), [("gauge", "W"), ("gauge", "kW"), ("counter", "J")])
def test_golden_case_split_over_devices(tmp_path: Path, kind: str, unit: str) -> None:
    """The analytic case (500 W for 1 h, 0.6 kWh/Mtok) with its 500 W spread over four devices."""
    one = write_golden_bundle(tmp_path / "one", power_unit=unit, kind=kind, ext="parquet")
    table = pq.read_table(one / "power.parquet").to_pydict()
    t = np.array([x.timestamp() for x in table["timestamp"]])
    v = np.array(table["value"])
    offset = v[0] if kind == "counter" else 0.0
    parts = {
        "timestamp": np.tile(t, 4),
        "device": np.repeat([f"gpu{i}" for i in range(4)], t.size),
        "value": np.tile((v - offset) / 4 + offset / 4, 4),
    }
    import yaml

    manifest = yaml.safe_load((one / "manifest.yaml").read_text())
    tokens = pq.read_table(one / "tokens.parquet").to_pydict()
    tokens["timestamp"] = [x.timestamp() for x in tokens["timestamp"]]
    bundle = write_bundle(tmp_path / "four", manifest, {"power.parquet": parts, "tokens.parquet": tokens})
    _regroup(bundle, 100)
    _assert_shard_independent(bundle, [1, 300])
    _, figures, _ = _documents(bundle, DEFAULT_SCHEME, 1)
    metrics = json.loads(figures)["metrics"]
    assert metrics["it_energy"]["value"] == pytest.approx(0.5, rel=1e-9)
    assert metrics["energy_per_million_tokens"]["value"] == pytest.approx(0.6, rel=1e-9)


def test_demo_deployments_fold_to_the_same_bits(tmp_path: Path) -> None:
    """Every demo deployment with more than one GPU (six hours at 15 s, its extra meters and layers)."""
    from greencert.sources.simulate import SAMPLE_FLEET, simulate_deployment

    day = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    profiles = [p for p in SAMPLE_FLEET if p.gpus > 1]
    assert profiles
    for profile in profiles:
        bundle = simulate_deployment(
            profile, day, day + dt.timedelta(hours=6), tmp_path / profile.deployment, file_format="parquet"
        )
        _regroup(bundle, 4096)
        _assert_shard_independent(bundle, [1, open_bundle(bundle).power.n_rows // 2])


def test_fleet_simulator_deployment_folds_to_the_same_bits(tmp_path: Path) -> None:
    """A fleet-simulator deployment (node meters, reconciliation, 2026.3 boundary): 40 GPUs, a day at 15 s."""
    from greencert.sources.fleet import FleetSpec, write_fleet_day

    folder = write_fleet_day(
        FleetSpec(scale=0.005, one_deployment=True), dt.datetime(2026, 1, 1, tzinfo=dt.UTC), tmp_path
    )
    (bundle,) = [p for p in folder.iterdir() if p.is_dir()]
    _regroup(bundle, 50_000)
    # The node meters (5 nodes) are sharded too at the smaller size.
    assert max(m.n_shards for m in open_bundle(bundle, 5761 * 3).meters.values()) > 1
    _assert_shard_independent(bundle, [5761 * 3, 70_000])


def test_a_bad_row_in_a_later_shard_is_named_as_in_the_whole_file(tmp_path: Path) -> None:
    bundle = _gauge_bundle(tmp_path / "b", 7)
    path = bundle / "power.parquet"
    table = pq.read_table(path)
    values = table.column("value").to_numpy().copy()
    bad = values.size - 17
    values[bad] = np.nan
    import pyarrow as pa

    pq.write_table(table.set_column(2, "value", pa.array(values)), path, row_group_size=500)
    messages = []
    for size in (WHOLE, 1, 700):
        b = open_bundle(bundle, size)
        with pytest.raises(ValidationFailed) as caught:
            validate_bundle(b, load_scheme(DEFAULT_SCHEME))
        messages.append(str(caught.value))
    assert f"power.parquet row {bad}" in messages[0]
    assert messages[1] == messages[0] and messages[2] == messages[0]


def test_interleaved_devices_and_csv_are_read_whole(tmp_path: Path) -> None:
    """A time-ordered export (devices interleaved) and a CSV file are one shard (docs/streaming.md)."""
    bundle = _gauge_bundle(tmp_path / "b", 3)
    path = bundle / "power.parquet"
    table = pq.read_table(path)
    order = np.argsort(table.column("timestamp").to_numpy(), kind="stable")
    pq.write_table(table.take(order), path, row_group_size=500)
    assert open_bundle(bundle, 10).power.n_shards == 1
    golden = write_golden_bundle(tmp_path / "csv")
    assert open_bundle(golden, 10).power.n_shards == 1
    assert open_bundle(golden, 10).power.whole is not None


def test_shards_fold_the_same_in_this_process_as_on_the_pool(tmp_path: Path, monkeypatch) -> None:
    """In a daemonic process (a Celery task) or a pool worker the shards fold in-process: same bits."""
    import greencert.compute.fold as fold_module

    bundle = _gauge_bundle(tmp_path / "b", 11)
    _regroup(bundle, 997)
    on_pool = _documents(bundle, DEFAULT_SCHEME, 1500)
    monkeypatch.setattr(fold_module, "may_start_processes", lambda: False)
    monkeypatch.setattr(fold_module, "_RECENT", {})
    in_process = _documents(bundle, DEFAULT_SCHEME, 1500)
    assert on_pool[0] == in_process[0] > 1
    assert on_pool == in_process

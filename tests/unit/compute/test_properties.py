"""Hypothesis properties of integration and aggregation, against a plain-Python reference written here.

* splitting a period into parts gives the same total energy and tokens;
* reordering the rows of a file (devices interleaved any way) changes nothing once the reader has
  grouped them; timestamps out of order within one device are rejected (documented behaviour);
* scaling all power by k scales energy by k;
* unit conversions round-trip;
* counter resets anywhere never make an increase negative.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greencert.bundle.reader import POWER_COLUMNS, Series, read_series
from greencert.compute.integrate import counter_increments, integrate
from greencert.units import Q_, as_array

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
MAX_GAP = 120.0


# ---------------------------------------------------------------- reference implementation


def ref_gauge(t: list[float], p: list[float], a: float, b: float, max_gap: float) -> float:
    """Integral over [a, b] of the straight lines between samples; gaps over max_gap count nothing."""
    total = 0.0
    for i in range(len(t) - 1):
        if t[i + 1] - t[i] > max_gap:
            continue
        lo, hi = max(t[i], a), min(t[i + 1], b)
        if hi > lo:
            slope = (p[i + 1] - p[i]) / (t[i + 1] - t[i])
            p_lo, p_hi = p[i] + slope * (lo - t[i]), p[i] + slope * (hi - t[i])
            total += (p_lo + p_hi) / 2 * (hi - lo)
    return total


def ref_counter(t: list[float], v: list[float], a: float, b: float) -> float:
    """Increase over [a, b]; a drop is a reset (the new value is what was counted since), spread evenly."""
    total = 0.0
    for i in range(len(t) - 1):
        step = v[i + 1] - v[i] if v[i + 1] >= v[i] else v[i + 1]
        lo, hi = max(t[i], a), min(t[i + 1], b)
        if hi > lo:
            total += step * (hi - lo) / (t[i + 1] - t[i])
    return total


# ---------------------------------------------------------------- strategies


@st.composite
def device_series(draw: st.DrawFn, n_devices: int = 3, max_samples: int = 40) -> dict[str, tuple]:
    """Per device: strictly increasing times (steps 1 s .. 200 s, some beyond max_gap) and values."""
    out = {}
    for d in range(draw(st.integers(1, n_devices))):
        steps = draw(st.lists(st.integers(1, 200), min_size=1, max_size=max_samples))
        start = T0 + draw(st.integers(-300, 3000))
        t = start + np.concatenate([[0.0], np.cumsum(steps, dtype=np.float64)])
        values = draw(
            st.lists(
                st.floats(0, 2000, allow_nan=False, allow_infinity=False), min_size=t.size, max_size=t.size
            )
        )
        out[f"gpu{d}"] = (t, np.array(values))
    return out


def series_of(per_device: dict[str, tuple], column: str = "value") -> Series:
    names = sorted(per_device)
    t = np.concatenate([per_device[n][0] for n in names])
    v = np.concatenate([per_device[n][1] for n in names])
    codes = np.concatenate([np.full(per_device[n][0].size, i, dtype=np.int32) for i, n in enumerate(names)])
    return Series("power.csv", t, codes, names, {column: v}, np.arange(t.size), "csv")


def window(draw: st.DrawFn) -> tuple[float, float]:
    a = T0 + draw(st.integers(-600, 4000))
    return float(a), float(a + draw(st.integers(1, 3 * 3600)))


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- the properties


@PROPS
@given(per_device=device_series(), data=st.data())
def test_splitting_the_period_gives_the_same_energy_and_tokens(per_device: dict, data: st.DataObject) -> None:
    a, c = window(data.draw)
    cuts = sorted(data.draw(st.lists(st.floats(a, c, allow_nan=False), min_size=1, max_size=4)))
    edges = [a, *cuts, c]
    series = series_of(per_device)
    for kind in ("gauge", "counter"):
        whole = integrate(series, "value", kind, a, c, MAX_GAP if kind == "gauge" else np.inf)
        parts = [
            integrate(series, "value", kind, lo, hi, MAX_GAP if kind == "gauge" else np.inf)
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
            if hi > lo
        ]
        split = np.sum([p.per_device for p in parts], axis=0)
        np.testing.assert_allclose(split, whole.per_device, rtol=1e-9, atol=1e-6)
        # ... and the whole matches the reference, device by device.
        for i, name in enumerate(series.devices):
            t, v = per_device[name]
            ref = (
                ref_gauge(list(t), list(v), a, c, MAX_GAP)
                if kind == "gauge"
                else ref_counter(list(t), list(v), a, c)
            )
            assert whole.per_device[i] == pytest.approx(ref, rel=1e-9, abs=1e-6)


def _write_power_csv(path: Path, t: np.ndarray, device: np.ndarray, value: np.ndarray) -> None:
    stamps = [dt.datetime.fromtimestamp(x, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for x in t]
    table = pa.table({"timestamp": stamps, "device": device.astype(str), "value": value})
    pacsv.write_csv(table, path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_device=device_series(max_samples=25), seed=st.integers(0, 2**32 - 1))
def test_interleaving_devices_changes_nothing_after_grouping(
    per_device: dict, seed: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("order")
    names = sorted(per_device)
    t = np.concatenate([per_device[n][0] for n in names])
    dev = np.concatenate([np.full(per_device[n][0].size, n) for n in names])
    v = np.concatenate([per_device[n][1] for n in names])
    # A random interleaving that keeps each device's own order: give every row a random slot,
    # then hand each device's slots back out in ascending order.
    rng = np.random.default_rng(seed)
    slots = rng.permutation(t.size)
    for n in names:
        idx = np.flatnonzero(dev == n)
        slots[idx] = np.sort(slots[idx])
    file_order = np.argsort(slots)
    _write_power_csv(folder / "sorted.csv", t, dev, v)
    _write_power_csv(folder / "mixed.csv", t[file_order], dev[file_order], v[file_order])
    a, b = T0, T0 + 3 * 3600
    results = []
    for name in ("sorted.csv", "mixed.csv"):
        series = read_series(folder / name, POWER_COLUMNS, (), ("value",), "device", "power")
        assert series.devices == names
        results.append(integrate(series, "value", "gauge", a, b, MAX_GAP))
    np.testing.assert_array_equal(results[0].per_hour, results[1].per_hour)
    np.testing.assert_array_equal(results[0].covered_seconds, results[1].covered_seconds)
    for i, name in enumerate(names):
        t_d, v_d = per_device[name]
        expected = ref_gauge(list(t_d), list(v_d), a, b, MAX_GAP)
        assert results[1].per_device[i] == pytest.approx(expected, rel=1e-9, abs=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(per_device=device_series(max_samples=25), data=st.data())
def test_out_of_order_times_within_a_device_are_rejected(
    per_device: dict, data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from conftest import make_manifest
    from greencert.bundle import open_bundle
    from greencert.bundle.writer import write_bundle
    from greencert.errors import ValidationFailed
    from greencert.grading import load_scheme
    from greencert.validation import validate_bundle

    names = sorted(per_device)
    victim = data.draw(st.sampled_from(names))  # every device has two samples or more
    t, v = (x.copy() for x in per_device[victim])
    i = data.draw(st.integers(0, t.size - 2))
    t[[i, i + 1]] = t[[i + 1, i]]  # two neighbouring samples of one device swapped
    per_device = {**per_device, victim: (t, v)}
    tt = np.concatenate([per_device[n][0] for n in names])
    tables = {
        "power.csv": {
            "timestamp": tt,
            "device": np.concatenate([np.full(per_device[n][0].size, n) for n in names]),
            "value": np.concatenate([per_device[n][1] for n in names]),
        },
        "tokens.csv": {
            "timestamp": np.array([T0, T0 + 3600.0]),
            "output_tokens": np.array([0.0, 1e6]),
            "input_tokens": np.array([0.0, 3e6]),
        },
    }
    start = dt.datetime.fromtimestamp(T0, dt.UTC)
    bundle = write_bundle(tmp_path_factory.mktemp("ooo") / "b", make_manifest(start), tables)
    with pytest.raises(ValidationFailed) as err:
        validate_bundle(open_bundle(bundle), load_scheme())
    message = str(err.value)
    assert "timestamps out of order" in message and f"device {victim!r}" in message


@PROPS
@given(per_device=device_series(), k=st.floats(1e-3, 1e3), data=st.data())
def test_scaling_power_by_k_scales_energy_by_k(per_device: dict, k: float, data: st.DataObject) -> None:
    a, b = window(data.draw)
    scaled = {n: (t, v * k) for n, (t, v) in per_device.items()}
    for kind, gap in (("gauge", MAX_GAP), ("counter", np.inf)):
        base = integrate(series_of(per_device), "value", kind, a, b, gap)
        times_k = integrate(series_of(scaled), "value", kind, a, b, gap)
        np.testing.assert_allclose(times_k.per_hour, k * base.per_hour, rtol=1e-9, atol=1e-9 * max(1.0, k))
        np.testing.assert_array_equal(times_k.covered_seconds, base.covered_seconds)


# Factors to one base unit per dimension, written out by hand (SI prefixes, 1 Wh = 3600 J,
# 1 lb = 453.59237 g, 1 Mtok = 10^6 tokens) -- independent of pint's definitions.
FACTORS = {
    "power": {"mW": 1e-3, "W": 1.0, "kW": 1e3, "MW": 1e6},
    "energy": {"mJ": 1e-3, "J": 1.0, "kJ": 1e3, "MJ": 1e6, "Wh": 3600.0, "kWh": 3.6e6, "MWh": 3.6e9},
    "carbon": {"gCO2e": 1.0, "kgCO2e": 1e3, "tCO2e": 1e6, "lbCO2e": 453.59237},
    "intensity": {"gCO2e/kWh": 1.0, "kgCO2e/MWh": 1.0, "gCO2e/MWh": 1e-3, "lbCO2e/MWh": 0.45359237},
    "energy per token": {"kWh/Mtok": 1.0, "Wh/ktok": 1.0, "J/tok": 1e6 / 3.6e6, "mJ/tok": 1e3 / 3.6e6},
}


@st.composite
def unit_pair(draw: st.DrawFn) -> tuple[str, str, str]:
    dimension = draw(st.sampled_from(sorted(FACTORS)))
    units = sorted(FACTORS[dimension])
    return dimension, draw(st.sampled_from(units)), draw(st.sampled_from(units))


@settings(max_examples=300, deadline=None)
@given(pair=unit_pair(), values=st.lists(st.floats(1e-9, 1e12), min_size=1, max_size=20))
def test_unit_conversions_round_trip_and_match_hand_factors(pair: tuple[str, str, str], values: list) -> None:
    dimension, u, v = pair
    x = np.array(values)
    there = as_array(x, u).to(v)
    np.testing.assert_allclose(there.magnitude, x * FACTORS[dimension][u] / FACTORS[dimension][v], rtol=1e-12)
    np.testing.assert_allclose(there.to(u).magnitude, x, rtol=1e-12)
    assert Q_(float(x[0]), u).to(v).to(u).magnitude == pytest.approx(float(x[0]), rel=1e-12)


@st.composite
def counter_with_resets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, counter readings and the true increments, with engine restarts at random samples."""
    n = draw(st.integers(2, 60))
    t = T0 + np.cumsum(draw(st.lists(st.integers(1, 600), min_size=n, max_size=n))).astype(float)
    increments = np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n)))
    increments[0] = 0.0
    resets = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    reading = np.empty(n)
    reading[0] = draw(st.floats(0, 1e9))
    for i in range(1, n):
        # A restart just after sample i-1: the counter starts from zero and reads what it counted since.
        reading[i] = increments[i] if resets[i] else reading[i - 1] + increments[i]
    return t, reading, increments


@settings(max_examples=300, deadline=None)
@given(counter=counter_with_resets(), data=st.data())
def test_counter_resets_never_make_the_increase_negative(counter: tuple, data: st.DataObject) -> None:
    t, reading, increments = counter
    steps = counter_increments(reading)
    assert (steps >= 0).all()
    a, b = window(data.draw)
    result = integrate(series_of({"engine": (t, reading)}), "value", "counter", a, b, np.inf)
    assert (result.per_hour >= 0).all()
    assert result.total == pytest.approx(ref_counter(list(t), list(reading), a, b), rel=1e-9, abs=1e-6)
    # Where every restart shows as a drop, nothing is lost or doubled: the steps are the true increments.
    drops = reading[1:] < reading[:-1]
    restarted = np.array(
        [r != prev + inc for prev, r, inc in zip(reading[:-1], reading[1:], increments[1:], strict=True)]
    )
    if np.array_equal(drops, restarted):
        np.testing.assert_allclose(steps, increments[1:], rtol=1e-12, atol=1e-6)

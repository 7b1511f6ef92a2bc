"""The vectorised integration engine against a plain-Python reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from greencert.bundle.reader import Series
from greencert.compute.integrate import hour_edges, integrate


def reference_energy(t: list[float], p: list[float], a: float, b: float, max_gap: float) -> float:
    """Trapezoid over [a, b] of the piecewise-linear curve, segment by segment, no vectorisation."""
    total = 0.0
    for i in range(len(t) - 1):
        t0, t1, p0, p1 = t[i], t[i + 1], p[i], p[i + 1]
        if t1 - t0 > max_gap:
            continue
        lo, hi = max(t0, a), min(t1, b)
        if hi <= lo:
            continue

        def at(x: float, t0: float = t0, t1: float = t1, p0: float = p0, p1: float = p1) -> float:
            return p0 + (p1 - p0) * (x - t0) / (t1 - t0)

        total += 0.5 * (at(lo) + at(hi)) * (hi - lo)
    return total


def reference_increase(t: list[float], v: list[float], a: float, b: float) -> float:
    total = 0.0
    for i in range(len(t) - 1):
        inc = v[i + 1] - v[i] if v[i + 1] >= v[i] else v[i + 1]
        lo, hi = max(t[i], a), min(t[i + 1], b)
        if hi > lo:
            total += inc * (hi - lo) / (t[i + 1] - t[i])
    return total


def _series(per_device: dict[str, tuple[np.ndarray, np.ndarray]]) -> Series:
    names = sorted(per_device)
    t = np.concatenate([per_device[n][0] for n in names])
    v = np.concatenate([per_device[n][1] for n in names])
    codes = np.concatenate([np.full(per_device[n][0].size, i, dtype=np.int32) for i, n in enumerate(names)])
    return Series("x.csv", t, codes, names, {"value": v}, np.arange(t.size), "csv")


@pytest.mark.parametrize("seed", range(8))
def test_gauge_matches_reference_on_random_irregular_series(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = {}
    for d in range(3):
        steps = rng.uniform(1, 200, size=rng.integers(5, 60))
        t = 1_767_225_600.0 - 500 + np.cumsum(steps)
        data[f"dev{d}"] = (t, rng.uniform(0, 700, t.size))
    series = _series(data)
    start, end = 1_767_225_600.0, 1_767_225_600.0 + 3 * 3600 + 123
    max_gap = 120.0
    result = integrate(series, "value", "gauge", start, end, max_gap)
    edges = hour_edges(start, end)
    for i, name in enumerate(series.devices):
        t, p = data[name]
        for h in range(edges.size - 1):
            want = reference_energy(list(t), list(p), edges[h], edges[h + 1], max_gap)
            assert result.per_hour[i, h] == pytest.approx(want, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_counter_matches_reference_with_resets(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    t = 1_767_225_600.0 + np.cumsum(rng.uniform(5, 90, 80))
    v = np.cumsum(rng.uniform(0, 1000, 80))
    for r in np.sort(rng.choice(np.arange(5, 75), 3, replace=False)):
        v[r:] -= v[r] - rng.uniform(0, 50)  # reset to a small value
    assert (v >= 0).all()  # real counters are never negative (validation rejects them)
    series = _series({"c": (t, v)})
    start, end = t[3] + 7.0, t[-4] - 11.0
    result = integrate(series, "value", "counter", start, end, np.inf)
    want = reference_increase(list(t), list(v), start, end)
    assert result.total == pytest.approx(want, rel=1e-9)
    assert (result.per_hour >= 0).all()


def test_hour_edges_split_at_whole_utc_hours() -> None:
    start = 1_767_225_600.0 + 1800  # 00:30
    edges = hour_edges(start, start + 2 * 3600)
    assert list(edges - start) == [0, 1800, 5400, 7200]


def test_gap_longer_than_limit_is_not_bridged_and_lowers_coverage() -> None:
    t = np.array([0.0, 60.0, 120.0, 1020.0, 1080.0]) + 1_767_225_600.0
    series = _series({"g": (t, np.full(5, 100.0))})
    res = integrate(series, "value", "gauge", t[0], t[-1], 120.0)
    # Bridged: 0-60, 60-120, 1020-1080 = 180 s at 100 W; the 900 s gap is not.
    assert res.total == pytest.approx(100.0 * 180.0)
    assert res.coverage() == pytest.approx(180.0 / 1080.0)

"""Chunk planning, pairing and stitching of Prometheus range answers; source profiles; the hook's URL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greencert.errors import ConfigError, SourceError
from greencert.sources.profiles import build_selector, builtin_profiles, resolve_plan, series_name
from greencert.sources.prometheus import MAX_POINTS, pair_samples, plan_chunks, stitch

LOOKBACK_MS = 300_000


def grid(start: int, end: int, step: int) -> list[int]:
    """Reference: every evaluation time end, end - step, ... down to the first at or before start."""
    times = [end]
    while times[-1] > start:
        times.append(times[-1] - step)
    return sorted(times)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 10**12),
    span=st.integers(0, 5 * 10**8),
    step=st.integers(1, 3_600_000),
    max_points=st.integers(1, 50),
)
def test_chunks_cover_the_grid_once_within_the_limit(start, span, step, max_points):
    end = start + span
    if span // step > 5000:  # keep the reference grid small
        step = max(1, span // 5000)
    chunks = plan_chunks(start, end, step, max_points)
    covered: list[int] = []
    for first, last in chunks:
        assert (last - first) % step == 0
        points = (last - first) // step + 1
        assert 1 <= points <= max_points
        covered += list(range(first, last + 1, step))
    assert covered == grid(start, end, step)  # ascending, no step twice, none missing


def test_chunk_limit_is_prometheus_11000_points():
    step = 15_000
    one = plan_chunks(0, (MAX_POINTS - 1) * step, step)
    assert one == [(0, (MAX_POINTS - 1) * step)]
    two = plan_chunks(0, MAX_POINTS * step, step)
    assert two == [(0, (MAX_POINTS - 1) * step), (MAX_POINTS * step, MAX_POINTS * step)]
    # Prometheus' own check is (end - start) / step <= 11,000.
    assert all((last - first) / step <= 11_000 for first, last in two)


def test_grid_is_anchored_at_the_end():
    # 1 h at 7 s does not divide: the last step is the period end, the first lies before the start.
    chunks = plan_chunks(1_000_000, 1_000_000 + 3_600_000, 7_000)
    assert chunks[-1][1] == 1_000_000 + 3_600_000
    assert chunks[0][0] <= 1_000_000 < chunks[0][0] + 7_000


def answer(metric: dict[str, str], points: list[tuple[float, float]]) -> dict:
    """One series of a /api/v1/query_range matrix, as Prometheus writes it."""
    return {"metric": metric, "values": [[t, repr(v) if v == v else "NaN"] for t, v in points]}


def range_query(t: np.ndarray, v: np.ndarray, first: int, last: int, step: int) -> tuple[list, list]:
    """Reference of Prometheus' range evaluation: the latest sample within the lookback at each step."""
    values, times = [], []
    for e in range(first, last + 1, step):
        i = np.searchsorted(t, e, side="right") - 1
        if i >= 0 and t[i] >= e - LOOKBACK_MS:
            values.append((e / 1000, float(v[i])))
            times.append((e / 1000, int(t[i]) / 1000))
    return values, times


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400),
    interval=st.integers(5_000, 30_000),
    jitter=st.integers(0, 2_000),
    max_points=st.integers(2, 40),
    seed=st.integers(0, 2**32 - 1),
)
def test_pull_round_trip_gives_every_raw_sample_once(n, interval, jitter, max_points, seed):
    rng = np.random.default_rng(seed)
    # Irregular scrapes (interval +- jitter), step no longer than the shortest interval: all are seen.
    t = 1_767_225_600_000 + np.cumsum(interval + rng.integers(-jitter, jitter + 1, n))
    v = np.cumsum(rng.random(n))
    step = interval - jitter
    start, end = int(t[0]), int(t[-1]) + int(rng.integers(0, step))
    metric = {"__name__": "m", "gpu": "0"}
    parts = []
    for first, last in plan_chunks(start, end, step, max_points):
        values, times = range_query(t, v, first, last, step)
        paired = pair_samples([answer(metric, values)], [answer({"gpu": "0"}, times)] if times else [], "m")
        parts += list(paired.values())
    got_t, got_v = stitch(parts, "m")
    np.testing.assert_array_equal(got_t, t)
    np.testing.assert_array_equal(got_v, v)


def test_stitch_keeps_a_repeated_sample_once_and_rejects_a_clash():
    a = (np.array([0, 5, 10]), np.array([1.0, 2.0, 3.0]))
    b = (np.array([10, 15]), np.array([3.0, 4.0]))
    t, v = stitch([a, b], "q")
    assert t.tolist() == [0, 5, 10, 15] and v.tolist() == [1.0, 2.0, 3.0, 4.0]
    nan = stitch([(np.array([1, 1]), np.array([np.nan, np.nan]))], "q")
    assert nan[0].tolist() == [1]
    with pytest.raises(SourceError, match=r"sample at 1970-01-01T00:00:00.010000Z read 3.0 and 9.0"):
        stitch([a, (np.array([10]), np.array([9.0]))], "q")


def test_pairing_needs_the_same_series_and_steps():
    m = {"__name__": "m", "gpu": "0"}
    values = [answer(m, [(1.0, 5.0), (2.0, 5.0)])]
    ok = pair_samples(values, [answer({"gpu": "0"}, [(1.0, 0.5), (2.0, 0.5)])], "m")
    ((key, (t, v)),) = ok.items()
    assert key == (("gpu", "0"),) and t.tolist() == [500, 500] and v.tolist() == [5.0, 5.0]
    with pytest.raises(SourceError, match="only one of the value and timestamp answers"):
        pair_samples(values, [answer({"gpu": "1"}, [(1.0, 0.5), (2.0, 0.5)])], "m")
    with pytest.raises(SourceError, match="different steps"):
        pair_samples(values, [answer({"gpu": "0"}, [(1.0, 0.5)])], "m")
    with pytest.raises(SourceError, match="malformed series"):
        pair_samples([{"metric": m}], [], "m")


# --- profiles ---------------------------------------------------------------------------------------
def test_builtin_profiles_load_and_combine():
    assert set(builtin_profiles()) >= {"dcgm", "kepler", "redfish", "vllm", "sglang", "tgi"}
    plan = resolve_plan(["dcgm", "vllm"], {}, "cfg")
    assert plan.roles() == ["power", "tokens", "gpu_energy_counter"]
    assert plan.meters[0].unit == "mJ" and plan.meters[0].kind == "counter" and plan.meters[0].crosscheck
    assert build_selector(plan.tokens.output, {}) == "vllm:generation_tokens_total"
    kepler = builtin_profiles()["kepler"]
    assert build_selector(kepler.meters[0], {"node_name": "n1"}) == (
        'kepler_node_cpu_joules_total{zone="package", node_name="n1"}'
    )


def test_profile_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown source profile 'dcmg'"):
        resolve_plan(["dcmg", "vllm"], {}, "cfg")
    with pytest.raises(ConfigError, match="'dcgm' and 'kepler' both define power"):
        resolve_plan(["dcgm", "kepler", "vllm"], {}, "cfg")
    with pytest.raises(ConfigError, match="define no tokens"):
        resolve_plan(["dcgm"], {}, "cfg")
    # A function instead of a selector, and matchers that would close the selector, are refused.
    with pytest.raises(ConfigError, match="not a Prometheus metric name"):
        resolve_plan(
            ["x", "vllm"], {"x": {"power": {"metric": "rate(a[5m])", "kind": "gauge", "unit": "W"}}}, "c"
        )
    bad = {"power": {"metric": "a", "matchers": 'b="1"} or vector(1', "kind": "gauge", "unit": "W"}}
    with pytest.raises(ConfigError, match="not a list of PromQL label matchers"):
        resolve_plan(["x", "vllm"], {"x": bad}, "c")


def test_label_values_are_escaped():
    sel = builtin_profiles()["vllm"].tokens.output
    assert (
        build_selector(sel, {"model_name": 'a"b\\c'}) == r'vllm:generation_tokens_total{model_name="a\"b\\c"}'
    )


def test_series_names_from_labels():
    template = "{Hostname|hostname|instance}:gpu{gpu}"
    assert series_name(template, {"Hostname": "n1", "gpu": "0"}, "q") == "n1:gpu0"
    assert series_name(template, {"hostname": "n2", "gpu": "3"}, "q") == "n2:gpu3"
    assert series_name(template, {"instance": "10.0.0.1:9400", "gpu": "1"}, "q") == "10.0.0.1:9400:gpu1"
    assert series_name("{engine|}x", {}, "q") == "x"
    assert series_name(None, {"__name__": "m", "b": "2", "a": "1"}, "q") == "a=1,b=2"
    with pytest.raises(SourceError, match="none of the labels Hostname, hostname, instance"):
        series_name(template, {"gpu": "0"}, "q")


def test_hook_base_url_forms():
    from greencert.sources.prometheus_hook import PrometheusHook

    url = PrometheusHook._base_url
    assert url("127.0.0.1", 9090, None, "http") == "http://127.0.0.1:9090"
    assert url("prom.example.com", None, "https", "http") == "https://prom.example.com"
    assert url("prom.example.com", 443, None, "https") == "https://prom.example.com:443"
    # URI form: AIRFLOW_CONN_X='http://host:9090/prometheus' stores the path in `schema`.
    assert url("prom", 9090, "prometheus", "http") == "http://prom:9090/prometheus"
    assert (
        url("https://prom.example.com/prometheus/", None, None, "http")
        == "https://prom.example.com/prometheus"
    )

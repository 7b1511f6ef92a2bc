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
    with pytest.raises(SourceError, match=r"sample at 1970-01-01T00:00:00.010Z read 3.0 and 9.0"):
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


# --- period edges through the Puller, against the range-evaluation reference above -------------------
class ReferenceHook:
    """A stand-in for the server that evaluates range queries with the reference above."""

    def __init__(self, t: np.ndarray, v: np.ndarray):
        self.t, self.v = t, v

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        first, last, step_ms = round(start * 1000), round(end * 1000), round(step * 1000)
        values, times = range_query(self.t, self.v, first, last, step_ms)
        if not values:
            return []
        if query.startswith("timestamp("):
            return [answer({"gpu": "0"}, times)]
        return [answer({"__name__": "m", "gpu": "0"}, values)]


@settings(max_examples=80, deadline=None)
@given(
    interval=st.integers(5_000, 30_000),
    start_offset=st.integers(0, 10**7),
    span=st.integers(60_000, 3_600_000),
    gap=st.integers(0, 120_000),
)
def test_pull_keeps_the_samples_around_both_edges(interval, start_offset, span, gap):
    import datetime as dt

    from greencert.sources.prometheus import Puller

    t0 = 1_767_225_600_000
    t = t0 + interval * np.arange(2 + (start_offset + span + 300_000) // interval)
    v = np.arange(t.size, dtype=float)
    start, end = t0 + 150_000 + start_offset, t0 + 150_000 + start_offset + span
    when = [dt.datetime.fromtimestamp(x / 1000, dt.UTC) for x in (start, end)]
    puller = Puller(ReferenceHook(t, v), when[0], when[1], interval / 1000, gap / 1000)
    got = puller.pull("m", start - gap, keep_after_ms=gap).series
    (samples,) = got.values()
    # Reference: from the last sample at or before the grid's first step (end - k * step, the first
    # at or before the start), if within the gap, every sample up to the end, plus the first after
    # the end when no sample is on the end and it lies within the gap.
    first_step = end - -(-(end - start) // interval) * interval
    last_before = t[t <= first_step][-1]
    want = t[(t >= max(last_before, start - gap)) & (t <= end)]
    after = t[t > end]
    if (want.size == 0 or want[-1] != end) and after.size and after[0] <= end + gap:
        want = np.append(want, after[0])
    np.testing.assert_array_equal(samples[0], want)


# --- identity: churn stitched, MIG repeats once, genuine overlaps refused ---------------------------
def _device(members):
    from greencert.sources.prometheus import _stitch_device

    keyed = [
        (tuple(sorted(labels.items())), np.asarray(t, np.int64), np.asarray(v, float))
        for labels, t, v in members
    ]
    return _stitch_device("h:gpu0", keyed, "query q")


def test_label_churn_is_stitched_in_time_order():
    a = {"UUID": "GPU-1", "pod": "old"}
    b = {"UUID": "GPU-1", "pod": "new"}
    d = _device([(b, [30, 45], [2.0, 2.0]), (a, [0, 15], [1.0, 1.0])])
    np.testing.assert_array_equal(d.t, [0, 15, 30, 45])
    np.testing.assert_array_equal(d.v, [1.0, 1.0, 2.0, 2.0])
    assert [c["changed"] for c in d.label_changes()] == [{"pod": ["old", "new"]}]


def test_mig_repeats_count_once_and_record_instances():
    base = {"UUID": "GPU-1", "GPU_I_PROFILE": "3g.40gb", "GPU_I_ID": "1", "namespace": "a"}
    other = base | {"GPU_I_PROFILE": "4g.40gb", "GPU_I_ID": "2", "namespace": "b"}
    d = _device([(base, [0, 15, 30], [5.0, 6.0, 7.0]), (other, [0, 15, 30], [5.0, 6.0, 7.0])])
    assert d.t.size == 3 and d.repeated == 3
    assert {(m.gpu_instance, m.profile) for m in d.mig.values()} == {("1", "3g.40gb"), ("2", "4g.40gb")}


@pytest.mark.parametrize(
    ("t_b", "v_b", "message"),
    [([0, 15, 30], [5.0, 6.5, 7.0], "one reads 6.0, the other 6.5"), ([7, 22], [5.0, 6.0], "interleave")],
)
def test_genuine_overlap_is_refused(t_b, v_b, message):
    a = {"UUID": "GPU-1", "job": "one"}
    b = {"UUID": "GPU-1", "job": "two"}
    with pytest.raises(SourceError) as err:
        _device([(a, [0, 15, 30], [5.0, 6.0, 7.0]), (b, t_b, v_b)])
    assert "{UUID=GPU-1,job=one}" in str(err.value) and "{UUID=GPU-1,job=two}" in str(err.value)
    assert message in str(err.value)


def test_two_uuids_under_one_name_are_refused():
    with pytest.raises(SourceError, match="2 physical GPUs"):
        _device([({"UUID": "GPU-1"}, [0], [1.0]), ({"UUID": "GPU-2"}, [15], [1.0])])


# --- token chains ----------------------------------------------------------------------------------
def _pulled(query, series):
    from greencert.sources.prometheus import Pulled

    return Pulled(
        query,
        {tuple(sorted(k.items())): (np.asarray(t, np.int64), np.asarray(v, float)) for k, t, v in series},
        2,
    )


def test_replaced_pod_continues_its_chain_and_parallel_engines_stay_apart():
    from greencert.sources.prometheus import chain_token_series, token_union_coverage

    old, new, par = {"pod": "a", "engine": "0"}, {"pod": "b", "engine": "0"}, {"pod": "a", "engine": "1"}
    out = _pulled("o", [(old, [0, 10], [100, 110]), (new, [20, 30], [5, 15]), (par, [0, 30], [0, 30])])
    inp = _pulled("i", [(old, [0, 10], [300, 330]), (new, [20, 30], [15, 45]), (par, [0, 30], [0, 90])])
    o, i, chains = chain_token_series(out, inp, None)
    assert sorted(len(c.members) for c in chains) == [1, 2]
    joined = next(c for c in chains if len(c.members) == 2)
    np.testing.assert_array_equal(o[joined.name][1], [100, 110, 5, 15])
    np.testing.assert_array_equal(i[joined.name][1], [300, 330, 15, 45])
    assert token_union_coverage(chains, 0, 40) == pytest.approx(30 / 40)


def test_hand_over_without_a_drop_is_refused():
    from greencert.sources.prometheus import chain_token_series

    out = _pulled("o", [({"pod": "a"}, [0, 10], [1, 2]), ({"pod": "b"}, [20, 30], [5, 6])])
    inp = _pulled("i", [({"pod": "a"}, [0, 10], [1, 2]), ({"pod": "b"}, [20, 30], [0, 1])])
    with pytest.raises(SourceError, match="would read as a continuation"):
        chain_token_series(out, inp, None)


# --- attribution ------------------------------------------------------------------------------------
def test_mig_slice_shares_are_exact_fractions():
    from greencert.compute.attribution import mig_slice_shares, slices

    assert [slices(p, "x") for p in ("1g.10gb", "3g.40gb", "7g.80gb", "1g.20gb+me")] == [1, 3, 7, 1]
    with pytest.raises(SourceError, match="slice count is unknown"):
        slices("MIG-strange", "x")
    instances = [
        {"gpu_instance": "1", "profile": "1g.10gb", "holders": [{"namespace": "a"}]},
        {"gpu_instance": "2", "profile": "2g.20gb", "holders": [{"namespace": "b"}]},
        {"gpu_instance": "3", "profile": "3g.40gb", "holders": [{"namespace": "a"}]},
    ]
    devices = {"h:gpu0": {"labels": [], "mig": instances}}
    a = mig_slice_shares(devices, {"namespace": "a"}, "x")
    b = mig_slice_shares(devices, {"namespace": "b"}, "x")
    assert a["detail"]["h:gpu0"]["fraction"] == "2/3" and b["detail"]["h:gpu0"]["fraction"] == "1/3"
    changed = [
        {"gpu_instance": "1", "profile": "1g.10gb", "holders": [{"namespace": "a"}, {"namespace": "b"}]}
    ]
    with pytest.raises(SourceError, match="changed hands"):
        mig_slice_shares({"h:gpu0": {"labels": [], "mig": changed}}, {"namespace": "a"}, "x")
    # A whole GPU (no MIG) that a pod of this deployment held for part of the period only.
    whole = {"h:gpu1": {"labels": [{"namespace": "a"}, {"namespace": "b"}], "mig": []}}
    with pytest.raises(SourceError, match="GPU 'h:gpu1' changed hands"):
        mig_slice_shares(whole, {"namespace": "a"}, "x")

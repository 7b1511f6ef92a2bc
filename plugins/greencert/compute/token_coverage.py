"""Share of the period the output-token counters cover, and a bound on the tokens they miss.

Rule (docs/uncertainty.md, "Token coverage"):

* an instance's counter covers the span between two of its consecutive samples when they are
  no further apart than the effective max gap (the scheme's ``data_quality.max_gap``); before its
  first sample, after its last and across a longer step it covers nothing: a restart there loses
  the tokens counted since the last sample (``increase()`` only sees the new counter's value);
* before an instance's first and after its last sample, the deployment counts as covered where
  any other instance is (the union, as validation judges replaced pods and scale-out,
  docs/prometheus.md: an instance that did not exist yet served nothing); a step longer than
  max_gap inside one instance is uncovered whatever the others do (the instance was there on
  both sides, and a restart inside the step lost tokens);
* ``coverage`` is the share of the period that is covered in this sense (time-weighted), with
  each instance's own share beside it;
* the tokens the uncovered time may hold lie between 0 and: where no instance counted, its
  duration x the highest rate the deployment was seen to reach (the sum over instances of each
  one's highest rate over a covered step: all at their peak at once, a physical, conservative
  ceiling); where only one instance's long step is uncovered, its duration x that instance's
  highest rate.

Everything here is vectorised over samples; only the (few) merged spans are listed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from greencert.bundle.reader import Series
from greencert.compute.integrate import counter_increments
from greencert.errors import BundleError


@dataclass(frozen=True)
class TokenCoverage:
    coverage: float  # covered share of the period (module docstring)
    per_instance: dict[str, float]  # each instance's own covered share of the period
    uncovered: np.ndarray  # (k, 2) uncovered spans [a, b) of the period, disjoint, in time order
    max_rate: float  # tokens/s: sum over instances of their highest rate over a covered step
    period_seconds: float
    missing_high: float = 0.0  # most tokens the uncovered time could hold (the low end is 0)

    @property
    def uncovered_seconds(self) -> float:
        return float(np.sum(self.uncovered[:, 1] - self.uncovered[:, 0])) if self.uncovered.size else 0.0


def _merge(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals [a_i, b_i) as disjoint runs in time order (touching intervals join)."""
    if a.size == 0:
        return np.zeros(0), np.zeros(0)
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    # A new run starts where an interval begins after every earlier one has ended.
    reach = np.maximum.accumulate(b)
    new = np.concatenate([[True], a[1:] > reach[:-1]])
    ends = reach[np.concatenate([np.flatnonzero(new)[1:] - 1, [a.size - 1]])]
    return a[new], ends


def _measure(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(b - a)) if a.size else 0.0


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def token_coverage(
    series: Series, start: float, end: float, max_gap: float, column: str = "output_tokens"
) -> TokenCoverage:
    """Coverage of [start, end) by the counters of ``column`` (one instance per device code)."""
    period = end - start
    t, v, codes = series.t, series.values[column], series.device_codes
    n_inst = len(series.devices)
    if t.size < 2 or period <= 0:
        return TokenCoverage(
            0.0, dict.fromkeys(series.devices, 0.0), np.array([[start, end]]), 0.0, max(period, 0.0)
        )
    dt_step = t[1:] - t[:-1]
    same = codes[1:] == codes[:-1]
    ok = same & (dt_step > 0) & (dt_step <= max_gap)
    long_ = same & (dt_step > max_gap)
    a = np.clip(t[:-1][ok], start, end)
    b = np.clip(t[1:][ok], start, end)
    inst = codes[:-1][ok]
    inside = b > a
    # Highest rate per instance over covered steps that touch the period (resets as increase()).
    rate = counter_increments(v)[ok][inside] / dt_step[ok][inside]
    peak = np.zeros(n_inst)
    if rate.size:  # rows are grouped by instance: one reduceat over each instance's run
        inst_r = inst[inside]
        firsts = np.flatnonzero(np.concatenate([[True], inst_r[1:] != inst_r[:-1]]))
        peak[inst_r[firsts]] = np.maximum.reduceat(rate, firsts)
    a, b, inst = a[inside], b[inside], inst[inside]
    # One instance's steps do not overlap (time increases within an instance): its share is a sum.
    own = np.bincount(inst, weights=b - a, minlength=n_inst) / period
    run_start, run_end = _merge(a, b)
    # Where no instance counts: the holes between the union's runs.
    holes_a = np.concatenate([[start], run_end])
    holes_b = np.concatenate([run_start, [end]])
    keep = holes_b > holes_a
    holes_a, holes_b = holes_a[keep], holes_b[keep]
    # Long steps inside one instance, and the part of each the union covers (|gap| + |union| -
    # |gap u union|, per instance, so no pairwise comparison of intervals).
    ga = np.clip(t[:-1][long_], start, end)
    gb = np.clip(t[1:][long_], start, end)
    g_inst = codes[:-1][long_]
    inside_g = gb > ga
    ga, gb, g_inst = ga[inside_g], gb[inside_g], g_inst[inside_g]
    union_len = _measure(run_start, run_end)
    missing = _measure(holes_a, holes_b) * float(peak.sum())
    for i in np.unique(g_inst).tolist():
        sel = g_inst == i
        both_a, both_b = _merge(np.concatenate([ga[sel], run_start]), np.concatenate([gb[sel], run_end]))
        covered_part = _measure(ga[sel], gb[sel]) + union_len - _measure(both_a, both_b)
        missing += covered_part * float(peak[i])
    u_a, u_b = _merge(np.concatenate([holes_a, ga]), np.concatenate([holes_b, gb]))
    uncovered = np.stack([u_a, u_b], axis=1) if u_a.size else np.zeros((0, 2))
    return TokenCoverage(
        max(0.0, 1.0 - _measure(u_a, u_b) / period),
        {name: float(own[i]) for i, name in enumerate(series.devices)},
        uncovered,
        float(peak.sum()),
        period,
        missing,
    )


def check_minimum(cov: TokenCoverage, minimum: float, file: str) -> None:
    """BundleError when the counters cover less of the period than the scheme's minimum."""
    if cov.coverage + 1e-12 >= minimum:
        return
    a, b = cov.uncovered[0]
    raise BundleError(
        f"output-token counters cover {cov.coverage:.2%} of the period, below the scheme's minimum "
        f"{minimum:.2%} (data_quality.min_token_coverage); first uncovered span {_utc(a)} to {_utc(b)} "
        f"({len(cov.uncovered)} uncovered span(s), {cov.uncovered_seconds:g} s in all)",
        file,
    )


def first_uncovered(cov: TokenCoverage) -> tuple[str, str] | None:
    if not cov.uncovered.size:
        return None
    return _utc(cov.uncovered[0, 0]), _utc(cov.uncovered[0, 1])

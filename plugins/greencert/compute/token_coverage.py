"""Share of the period the output-token counters cover, and a bound on the tokens they miss.

Rule (docs/uncertainty.md, "Token coverage"):

* an instance's counter covers the span between two of its consecutive samples when they are
  no further apart than the effective max gap (the scheme's ``data_quality.max_gap``); before its
  first sample, after its last and across a longer step it covers nothing: a restart there loses
  the tokens counted since the last sample (``increase()`` only sees the new counter's value);
* the deployment is covered where any of its instances is covered (the union, as validation
  judges replaced pods and scale-out, docs/prometheus.md); ``coverage`` is the covered share of
  the period (time-weighted), with each instance's own share beside it;
* the tokens an uncovered span may hold lie between 0 and its duration x the highest token rate
  the deployment was seen to reach: the sum over instances of each one's highest rate over a
  covered step (all instances at their peak at once: a physical, conservative ceiling).

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
    coverage: float  # covered share of the period, union over instances
    per_instance: dict[str, float]  # each instance's own covered share of the period
    uncovered: np.ndarray  # (k, 2) spans [a, b) of the period no instance covers, in time order
    max_rate: float  # tokens/s: sum over instances of their highest rate over a covered step
    period_seconds: float

    @property
    def uncovered_seconds(self) -> float:
        return float(np.sum(self.uncovered[:, 1] - self.uncovered[:, 0])) if self.uncovered.size else 0.0

    @property
    def missing_high(self) -> float:
        """Most tokens the uncovered spans could hold (the low end is 0)."""
        return self.uncovered_seconds * self.max_rate


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
    ok = (codes[1:] == codes[:-1]) & (dt_step > 0) & (dt_step <= max_gap)
    a = np.clip(t[:-1][ok], start, end)
    b = np.clip(t[1:][ok], start, end)
    inst = codes[:-1][ok]
    inside = b > a
    # Highest rate per instance over covered steps that touch the period (resets as increase()).
    rate = counter_increments(v)[ok][inside] / dt_step[ok][inside]
    peak = np.zeros(n_inst)
    np.maximum.at(peak, inst[inside], rate)
    a, b, inst = a[inside], b[inside], inst[inside]
    # One instance's steps do not overlap (time increases within an instance): its share is a sum.
    own = np.bincount(inst, weights=b - a, minlength=n_inst) / period
    # Union over instances: sort by start; a new run starts where a span begins after every
    # earlier span has ended.
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    if a.size:
        reach = np.maximum.accumulate(b)
        new = np.concatenate([[True], a[1:] > reach[:-1]])
        run_start = a[new]
        run_end = reach[np.concatenate([np.flatnonzero(new)[1:] - 1, [a.size - 1]])]
    else:
        run_start = run_end = np.zeros(0)
    covered = float(np.sum(run_end - run_start))
    holes_a = np.concatenate([[start], run_end])
    holes_b = np.concatenate([run_start, [end]])
    keep = holes_b > holes_a
    uncovered = np.stack([holes_a[keep], holes_b[keep]], axis=1) if keep.any() else np.zeros((0, 2))
    return TokenCoverage(
        min(1.0, covered / period),
        {name: float(own[i]) for i, name in enumerate(series.devices)},
        uncovered,
        float(peak.sum()),
        period,
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

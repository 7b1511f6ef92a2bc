"""Token coverage (scheme 2026.3): the share of the period the output-token counters cover, the
finding, the interval term and the rejection below the scheme's minimum. Expected figures are
worked out by hand from the sample times and rates of each analytic bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.compute.token_coverage import token_coverage
from greencert.errors import BundleError
from greencert.grading import SCHEME_DIR
from integrity_bundles import START, assess_bundle, budget_row, build, findings, times

S26_2 = SCHEME_DIR / "greencert-2026.2.yaml"
S26_3 = SCHEME_DIR / "greencert-2026.3.yaml"
RATE = 1_000_000.0 / 3600.0  # tokens/s of integrity_bundles' default counter (1 Mtok per hour)
J_PER_KWH = 3.6e6


def _tokens(t: np.ndarray, rate: float = RATE, instance: str | None = None) -> dict[str, np.ndarray]:
    out = 1000.0 + rate * (t - START)
    cols = {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out}
    if instance is not None:
        cols["instance"] = np.array([instance] * t.size)
    return cols


def _late_start(tmp: Path, first: float, **kw) -> Path:
    t = times()
    return build(tmp, extra_tables={"tokens.csv": _tokens(t[t >= START + first])}, **kw)


def test_counters_that_start_late_cover_the_rest_of_the_period(tmp_path: Path) -> None:
    b = open_bundle(_late_start(tmp_path / "b", 105.0))
    cov = token_coverage(b.tokens, START, START + 3600.0, 120.0)
    assert cov.coverage == pytest.approx(1 - 105 / 3600)
    np.testing.assert_allclose(cov.uncovered, [[START, START + 105.0]])
    assert cov.max_rate == pytest.approx(RATE)
    assert cov.missing_high == pytest.approx(105 * RATE)


def test_a_step_longer_than_max_gap_is_uncovered_and_short_steps_are_covered(tmp_path: Path) -> None:
    t = times()
    keep = ~((t > START + 1200) & (t < START + 1500))  # one 300 s step (> 120 s), the rest 15 s
    b = open_bundle(build(tmp_path / "b", extra_tables={"tokens.csv": _tokens(t[keep])}))
    cov = token_coverage(b.tokens, START, START + 3600.0, 120.0)
    assert cov.coverage == pytest.approx(1 - 300 / 3600)
    np.testing.assert_allclose(cov.uncovered, [[START + 1200, START + 1500]])
    # The same step with a looser max gap is covered.
    assert token_coverage(b.tokens, START, START + 3600.0, 300.0).coverage == pytest.approx(1.0)


def test_instances_cover_the_period_together_and_rates_add_up(tmp_path: Path) -> None:
    t = times()
    a = _tokens(t[t <= START + 2400], RATE, "a")  # ends at 40:00
    c = _tokens(t[t >= START + 1800], 2 * RATE, "c")  # starts at 30:00, twice the rate
    tokens = {k: np.concatenate([a[k], c[k]]) for k in a}
    b = open_bundle(build(tmp_path / "b", extra_tables={"tokens.csv": tokens}))
    cov = token_coverage(b.tokens, START, START + 3600.0, 120.0)
    assert cov.coverage == pytest.approx(1.0)
    assert cov.per_instance == pytest.approx({"a": 2400 / 3600, "c": 1800 / 3600})
    assert cov.max_rate == pytest.approx(3 * RATE)
    assert cov.uncovered.shape == (0, 2)


def test_a_long_step_of_one_instance_is_uncovered_while_another_instance_counts(tmp_path: Path) -> None:
    # Two instances over the whole hour (data-parallel); "b" has one 300 s step (20:00-25:00).
    t = times()
    keep = ~((t > START + 1200) & (t < START + 1500))
    a = _tokens(t, RATE, "a")
    c = _tokens(t[keep], 2 * RATE, "b")
    tokens = {k: np.concatenate([a[k], c[k]]) for k in a}
    b = open_bundle(build(tmp_path / "b", extra_tables={"tokens.csv": tokens}))
    cov = token_coverage(b.tokens, START, START + 3600.0, 120.0)
    assert cov.coverage == pytest.approx(1 - 300 / 3600)
    np.testing.assert_allclose(cov.uncovered, [[START + 1200, START + 1500]])
    # Only "b" may have lost tokens there: 300 s x its own rate, not the two instances' sum.
    assert cov.missing_high == pytest.approx(300 * 2 * RATE)


def test_partial_coverage_is_a_finding_and_an_interval_term_under_2026_3(tmp_path: Path) -> None:
    # 3 % of the hour before the first token sample: the case (97 % coverage).
    first = 108.0 - 108.0 % 15 + 15  # 120 s: the first 15 s sample at or after 108 s
    path = _late_start(
        tmp_path / "b",
        first,
        power_spec={"meter_class": "pdu", "accuracy": 0.01},
        manifest_extra={"idle_capacity": {"basis": "metered"}},  # no idle share: the truth is 500 W
    )
    fig, a = assess_bundle(path, S26_3)
    counted = RATE * (3600 - first)
    assert fig.output_tokens.to("token").magnitude == pytest.approx(counted)
    assert a.sections["data_quality"]["token_coverage"] == pytest.approx(1 - first / 3600)
    (f,) = findings(a, "token-coverage-partial")
    assert f["severity"] == "warning"
    assert f["figures"]["missing_tokens_high"] == pytest.approx(first * RATE, rel=1e-5)
    assert "2026-01-01T00:00:00Z to 2026-01-01T00:02:00Z" in f["message"]
    # The token row alone: tokens + u x missing_high, u uniform: the 97.5 % quantile of u gives
    # the low end of energy/Mtok, the 2.5 % quantile the high end (Monte Carlo: 2 % tolerance).
    row = budget_row(a, "token_coverage")
    high = first * RATE
    lo_ref = counted / (counted + 0.975 * high) - 1
    hi_ref = counted / (counted + 0.025 * high) - 1
    assert row["energy_relative95"][0] == pytest.approx(lo_ref, rel=0.02)
    assert row["energy_relative95"][1] == pytest.approx(hi_ref, abs=5e-4)
    # The certified value stays energy / counted tokens; the interval holds the truth
    # (energy / all 1 Mtok): 500 W x 1 h x PUE 1.2 per Mtok.
    truth = 500 * 3600 / J_PER_KWH * 1.2 / 1.0
    value = fig.metrics()["energy_per_million_tokens"]["value"]
    assert value == pytest.approx(truth * 1e6 / counted, rel=1e-6)
    low, up = a.intervals["energy_per_million_tokens"]
    assert low <= truth < value <= up


def test_scheme_2026_2_records_no_token_coverage(tmp_path: Path) -> None:
    _, a = assess_bundle(_late_start(tmp_path / "b", 120.0), S26_2)
    assert "data_quality" not in a.sections
    assert not findings(a, "token-coverage-partial")
    assert all(r["source"] != "token_coverage" for r in a.sections["uncertainty"]["budget"])


def test_full_coverage_adds_no_finding_and_no_row(tmp_path: Path) -> None:
    _, a = assess_bundle(build(tmp_path / "b"), S26_3)
    assert a.sections["data_quality"]["token_coverage"] == 1.0
    assert not findings(a, "token-coverage-partial")
    assert all(r["source"] != "token_coverage" for r in a.sections["uncertainty"]["budget"])


def test_below_the_minimum_the_bundle_is_rejected_naming_file_figures_and_span(tmp_path: Path) -> None:
    # 6 minutes of 60 missing: 90 % < 95 %.
    path = _late_start(tmp_path / "b", 360.0)
    with pytest.raises(BundleError) as err:
        assess_bundle(path, S26_3)
    text = str(err.value)
    assert err.value.where == "tokens.csv"
    assert "90.00%" in text and "95.00%" in text and "min_token_coverage" in text
    assert "2026-01-01T00:00:00Z to 2026-01-01T00:06:00Z" in text

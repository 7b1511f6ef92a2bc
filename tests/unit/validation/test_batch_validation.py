"""Stacked GX validation (one run per suite over many bundles) gives every bundle the verdict it gets alone.

The reference is the ordinary per-bundle path (``validate_bundle``: each suite
run by GX on that bundle's own statistics). Each faulty bundle breaks a
different kind of expectation, including the two whose stacked form differs
(the row count and the column sum) and the declared-device set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import T0, make_manifest
from greencert.bundle import open_bundle
from greencert.bundle.writer import write_bundle
from greencert.errors import ValidationFailed
from greencert.grading import SCHEME_DIR, load_scheme
from greencert.validation.batch import SuiteStats, validate_batch
from greencert.validation.run import profile_bundle, validate_bundle

SCHEME = load_scheme(SCHEME_DIR / "greencert-2026.1.yaml")


def _bundle(target: Path, fault: str | None) -> Path:
    """Two GPUs at 15 s for one hour, 1 M output tokens; ``fault`` breaks one rule."""
    start = T0.timestamp()
    t = np.arange(start, start + 3600 + 7.5, 15.0)
    devices = ["gpu0", "gpu1"]
    power = np.full((2, t.size), 400.0)
    times = np.tile(t, 2).reshape(2, -1)
    declared = list(devices)
    if fault == "nan":
        power[1, 40] = np.nan
    elif fault == "negative":
        power[0, 7] = -5.0
    elif fault == "duplicate_time":
        times[1, 30] = times[1, 29]
    elif fault == "too_much_power":
        power[0, 100] = 2000.0
    elif fault == "no_energy":
        power[:] = 0.0  # every row is fine; only the bundle's sum is not (expect_column_sum)
    elif fault == "missing_device":
        declared = ["gpu0", "gpu1", "gpu2"]  # declared but absent: row count and set checks
    elif fault == "late_start":
        keep = t >= start + 600  # coverage below the scheme minimum
        times, power = times[:, keep], power[:, keep]
    out = 5_000.0 + 1e6 * (t - start) / 3600.0
    manifest = make_manifest(
        power={"file": "power.parquet", "kind": "gauge", "unit": "W", "devices": declared}, ext="parquet"
    )
    tables = {
        "power.parquet": {
            "timestamp": times.ravel(),
            "device": np.repeat(devices, times.shape[1]),
            "value": power.ravel(),
        },
        "tokens.parquet": {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out},
    }
    return write_bundle(target, manifest, tables)


FAULTS = [
    None,
    "nan",
    "negative",
    "duplicate_time",
    "too_much_power",
    "no_energy",
    "missing_device",
    "late_start",
    None,
]


def _alone(bundle_dir: Path) -> bool:
    try:
        validate_bundle(open_bundle(bundle_dir), SCHEME)
    except ValidationFailed:
        return False
    return True


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stack")
    return {f"{i}-{fault or 'ok'}": _bundle(root / f"b{i}", fault) for i, fault in enumerate(FAULTS)}


def _stats(bundles: dict[str, Path]) -> dict[str, list[SuiteStats]]:
    return {
        key: [SuiteStats.of(item) for item in profile_bundle(open_bundle(path), SCHEME)[0]]
        for key, path in bundles.items()
    }


def test_stacked_verdicts_equal_per_bundle_verdicts(bundles: dict[str, Path]) -> None:
    alone = {key: _alone(path) for key, path in bundles.items()}
    # The reference itself: the clean bundles pass, every faulty one fails.
    assert alone == {key: key.endswith("-ok") for key in bundles}

    outcome = validate_batch(_stats(bundles))

    assert set(outcome.passed) == {key for key, ok in alone.items() if ok}
    assert outcome.recheck == {key for key, ok in alone.items() if not ok}
    # One GX run per suite and parameter set, not one per bundle (plus one detail run per failing stack).
    assert outcome.gx_runs <= 4


def test_passing_bundles_report_the_same_expectations_as_alone(bundles: dict[str, Path]) -> None:
    ok = {key: path for key, path in bundles.items() if key.endswith("-ok")}
    outcome = validate_batch(_stats(ok))
    for key, path in ok.items():
        report = validate_bundle(open_bundle(path), SCHEME)
        stacked = outcome.passed[key]
        assert [(s.suite, s.file, s.evaluated, s.success) for s in stacked] == [
            (s.suite, s.file, s.evaluated, s.success) for s in report.suites
        ]


def test_a_bundles_report_does_not_depend_on_its_stack(bundles: dict[str, Path]) -> None:
    """A fleet run's chunks differ with the worker count: a passed bundle's report must not."""
    keys = sorted(bundles)
    ok = [k for k in keys if k.endswith("-ok")]
    alone = validate_batch(_stats({ok[0]: bundles[ok[0]]}))
    # The same bundle stacked with every other one, faulty ones included (they fail the stack).
    crowded = validate_batch(_stats(bundles))
    assert ok[0] in alone.passed and ok[0] in crowded.passed
    assert [s.gx_result for s in alone.passed[ok[0]]] == [s.gx_result for s in crowded.passed[ok[0]]]
    # Each expectation's counts are over this bundle's own statistics rows (two GPUs: two rows
    # of the per-device power statistics), nothing of the stack.
    stats = _stats({ok[0]: bundles[ok[0]]})[ok[0]]
    for suite_stats, result in zip(stats, alone.passed[ok[0]], strict=True):
        counts = {r["result"]["element_count"] for r in result.gx_result["results"]}
        assert counts == {len(suite_stats.frame)}, suite_stats.suite
        assert result.gx_result["success"] is True
    assert len(stats[0].frame) == 2

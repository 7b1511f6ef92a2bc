"""Run each GX suite once over the statistics of many bundles (a fleet-day's 50 deployments).

Great Expectations costs roughly 30 ms per expectation per run whatever the
frame's size (it builds a metric graph for every expectation), so 50 bundles
x 6 suites validated one by one spend over a minute in GX alone. The
statistics frames are small (one row per device), so we stack the frames of
every bundle that uses the same suite with the same parameters and run the
suite once on the stack.

This is exactly equivalent to one run per bundle:

* row-level expectations (``expect_column_values_to_be_between``) hold for
  the stack iff they hold for every bundle's rows, and GX's unexpected row
  indices name the failing bundles;
* ``expect_table_row_count_to_be_between``,
  ``expect_column_sum_to_be_between`` and
  ``expect_column_distinct_values_to_contain_set`` are properties of one
  bundle's frame; each becomes a row-level check of a per-bundle column (the
  bundle's row count minus its bound; the bundle's sum, computed with the same
  pandas call GX uses; how many declared devices the bundle lacks, which is 0
  iff it contains the set), one expectation for one, so a report counts the
  same expectations.

Parameters must agree within a stack (the declared device list and count are
per bundle and handled as above), so stacks are grouped by suite and
parameters. Anything else (another expectation type, ``mostly``, row
conditions) is not stacked: those suites run bundle by bundle.

A bundle whose rows fail anything is not given a verdict here: the caller
validates it alone (``validate_bundle``), which produces the usual report and
messages naming file, row and time. The stack only ever says "passed".
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from greencert.validation.gx import SuiteResult, _clean_gx_result, _gx, expectations_dir

if TYPE_CHECKING:
    from greencert.validation.run import SuiteInput

# Parameters that legitimately differ between stacked bundles (handled per bundle).
PER_BUNDLE_PARAMS = ("declared_devices", "expected_devices")
BUNDLE_COLUMN = "_bundle"
ROW_LEVEL = "expect_column_values_to_be_between"


@dataclass(frozen=True)
class SuiteStats:
    """What a stacked run needs from a :class:`SuiteInput`: the small frame, not the raw arrays."""

    suite: str
    frame: pd.DataFrame
    file: str
    n_rows: int
    label: str
    params: dict[str, Any]

    @classmethod
    def of(cls, item: SuiteInput) -> SuiteStats:
        return cls(
            item.suite, item.profile.frame, item.series.file, item.series.n_rows, item.label, item.params
        )


@dataclass
class BatchOutcome:
    """Suite results of the bundles that passed, and the bundles to validate one by one."""

    passed: dict[Hashable, list[SuiteResult]] = field(default_factory=dict)
    recheck: set[Hashable] = field(default_factory=set)
    gx_runs: int = 0
    expectations_run: int = 0
    seconds: float = 0.0


def _signature(stats: SuiteStats) -> str:
    shared = {k: v for k, v in stats.params.items() if k not in PER_BUNDLE_PARAMS}
    return json.dumps([stats.suite, stats.label, shared], sort_keys=True, default=repr)


def _load_suite_dict(name: str) -> dict[str, Any]:
    return json.loads((expectations_dir() / f"{name}.json").read_text(encoding="utf-8"))


def _param(value: Any, params: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return params[value["$PARAMETER"]]
    return value


def _stackable(suite: dict[str, Any]) -> bool:
    for exp in suite["expectations"]:
        kwargs = exp.get("kwargs", {})
        if "mostly" in kwargs or "row_condition" in kwargs:
            return False
        kind = exp["type"]
        if kind == "expect_table_row_count_to_be_between":
            if ("min_value" in kwargs) == ("max_value" in kwargs):
                return False  # one bound only (one slack column per expectation)
        elif kind not in (
            ROW_LEVEL,
            "expect_column_sum_to_be_between",
            "expect_column_distinct_values_to_contain_set",
        ):
            return False
    return True


def _stack(
    members: list[tuple[Hashable, SuiteStats]], suite: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any], list[tuple[int, int]]]:
    """The stacked frame, the stacked suite and each member's row range in the stack."""
    lengths = [len(st.frame) for _, st in members]
    bounds = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    spans = list(zip(bounds[:-1], bounds[1:], strict=True))
    # One value per member for each added column, spread over its rows once at the end:
    # inserting columns frame by frame cost pandas ~1 ms each (a third of the GX run).
    extra: dict[str, list[Any]] = {BUNDLE_COLUMN: list(range(len(members)))}
    for n, exp in enumerate(suite["expectations"]):
        kwargs = exp.get("kwargs", {})
        if exp["type"] == "expect_table_row_count_to_be_between":
            if "min_value" in kwargs:
                extra[f"_rows_slack_{n}"] = [
                    len(st.frame) - _param(kwargs["min_value"], st.params) for _, st in members
                ]
            else:
                extra[f"_rows_slack_{n}"] = [
                    _param(kwargs["max_value"], st.params) - len(st.frame) for _, st in members
                ]
        elif exp["type"] == "expect_column_sum_to_be_between":
            # The same pandas sum GX computes on this bundle's own frame.
            extra[f"_sum_{n}"] = [st.frame[kwargs["column"]].sum() for _, st in members]
        elif exp["type"] == "expect_column_distinct_values_to_contain_set":
            # How many of the set's values this bundle lacks (zero iff it contains the set).
            extra[f"_missing_{n}"] = [
                len(
                    set(_param(kwargs["value_set"], st.params) or [])
                    - set(st.frame[kwargs["column"]].astype(str))
                )
                for _, st in members
            ]
    stacked = pd.concat([st.frame for _, st in members], ignore_index=True)
    added = pd.DataFrame({name: np.repeat(np.asarray(values), lengths) for name, values in extra.items()})
    stacked = pd.concat([stacked, added], axis=1)

    expectations = []
    for n, exp in enumerate(suite["expectations"]):
        exp = json.loads(json.dumps(exp))
        kwargs = exp.setdefault("kwargs", {})
        if exp["type"] == "expect_table_row_count_to_be_between":
            exp["type"] = ROW_LEVEL
            exp["kwargs"] = {"column": f"_rows_slack_{n}", "min_value": 0}
        elif exp["type"] == "expect_column_sum_to_be_between":
            exp["type"] = ROW_LEVEL
            kwargs["column"] = f"_sum_{n}"
        elif exp["type"] == "expect_column_distinct_values_to_contain_set":
            # (Not a set check on bundle-qualified names against the union of the declared sets:
            # equivalent too, but GX copies an expectation's arguments hundreds of times per run,
            # and with 8,000 declared devices that alone took seconds.)
            exp["type"] = ROW_LEVEL
            exp["kwargs"] = {"column": f"_missing_{n}", "min_value": 0, "max_value": 0}
        expectations.append(exp)
    stacked_suite = {**suite, "name": f"{suite['name']}_stacked", "expectations": expectations}
    params = {k: v for k, v in members[0][1].params.items() if k not in PER_BUNDLE_PARAMS}
    return stacked, {"suite": stacked_suite, "params": params}, spans


def _summary(result: dict[str, Any], frame: pd.DataFrame, span: tuple[int, int]) -> dict[str, Any]:
    """The stacked run's result as recorded in the report of one bundle that passed.

    Only what holds for this bundle alone: every expectation passed, and each one's counts over
    this bundle's own rows of the stack (its rows, how many are missing, none unexpected). Nothing
    of the other members (their number, the stack's rows, whether the stack as a whole passed,
    GX's fingerprint of the stacked frame), so a report does not depend on which bundles were
    stacked together: a fleet run's chunks and worker count change no published byte.
    """
    start, end = span
    rows = end - start
    meta = {k: v for k, v in result.get("meta", {}).items() if k != "batch_markers"}
    results = []
    for r in result.get("results", []):
        cfg = dict(r.get("expectation_config", {}))
        kwargs = cfg.get("kwargs", {})
        cfg["kwargs"] = {k: (f"{len(v)} values" if isinstance(v, list) else v) for k, v in kwargs.items()}
        # Every stacked expectation is row-level on one column (see _stack).
        missing = int(frame[kwargs["column"]].iloc[start:end].isna().sum())
        results.append(
            {
                "success": True,
                "expectation_config": cfg,
                "result": {"element_count": rows, "missing_count": missing, "unexpected_count": 0},
            }
        )
    n = len(results)
    return {
        "success": True,
        "statistics": {
            "evaluated_expectations": n,
            "successful_expectations": n,
            "unsuccessful_expectations": 0,
            "success_percent": 100.0 if n else None,
        },
        "results": results,
        "meta": {**meta, "greencert_stacked": {"this_bundle_rows": rows}},
    }


def validate_batch(bundles: dict[Hashable, list[SuiteStats]]) -> BatchOutcome:
    """Validate many bundles' statistics with one GX run per (suite, parameters) stack."""
    began = time.perf_counter()
    outcome = BatchOutcome()
    _, batch_definition = _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite

    groups: dict[str, list[tuple[Hashable, int, SuiteStats]]] = {}
    for key, items in bundles.items():
        for pos, st in enumerate(items):
            groups.setdefault(_signature(st), []).append((key, pos, st))
    results: dict[Hashable, dict[int, SuiteResult]] = {key: {} for key in bundles}
    for members in groups.values():
        suite_dict = _load_suite_dict(members[0][2].suite)
        if not _stackable(suite_dict):
            outcome.recheck.update(key for key, _, _ in members)
            continue
        frame, spec, spans = _stack([(key, st) for key, _, st in members], suite_dict)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        suite = ExpectationSuite(**spec["suite"])
        # BASIC results are enough to pass a stack; only a failing stack needs GX's row
        # indices (COMPLETE, noticeably slower) to tell which bundles failed.
        result = batch.validate(suite, expectation_parameters=spec["params"], result_format="BASIC")
        outcome.gx_runs += 1
        outcome.expectations_run += len(result.results)
        failed: set[int] = set()
        unattributed = False
        if not result.success:
            detail = batch.validate(suite, expectation_parameters=spec["params"], result_format="COMPLETE")
            outcome.gx_runs += 1
            bundle_of_row = frame[BUNDLE_COLUMN].to_numpy()
            for r in detail.results:
                if r.success:
                    continue
                rows = r.result.get("unexpected_index_list")
                if r.expectation_config.type == ROW_LEVEL and rows is not None:
                    failed.update(int(bundle_of_row[int(i)]) for i in rows)
                else:
                    unattributed = True
        cleaned = _clean_gx_result(result.to_json_dict())
        for i, (key, pos, st) in enumerate(members):
            if unattributed or i in failed:
                outcome.recheck.add(key)
                continue
            results[key][pos] = SuiteResult(
                st.suite,
                st.file,
                True,
                [],
                len(result.results),
                _summary(cleaned, frame, spans[i]),
            )
    for key, items in bundles.items():
        if key in outcome.recheck:
            continue
        outcome.passed[key] = [results[key][pos] for pos in range(len(items))]
    outcome.seconds = time.perf_counter() - began
    return outcome

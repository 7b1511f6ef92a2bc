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

import contextlib
import gc
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

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


def _summary(result: dict[str, Any], members: int, span: tuple[int, int], rows: int) -> dict[str, Any]:
    """The stacked run's result as recorded in each bundle's report: verdicts and counts, no row lists."""
    summary = {
        "success": result.get("success"),
        "statistics": result.get("statistics", {}),
        "results": [],
        "meta": {
            **result.get("meta", {}),
            "greencert_stacked": {"bundles": members, "frame_rows": rows, "this_bundle_rows": list(span)},
        },
    }
    for r in result.get("results", []):
        cfg = dict(r.get("expectation_config", {}))
        cfg["kwargs"] = {
            k: (f"{len(v)} values" if isinstance(v, list) else v) for k, v in cfg.get("kwargs", {}).items()
        }
        summary["results"].append(
            {
                "success": r.get("success"),
                "expectation_config": cfg,
                "result": {k: v for k, v in r.get("result", {}).items() if not isinstance(v, list | dict)},
            }
        )
    return summary


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
                _summary(cleaned, len(members), spans[i], len(frame)),
            )
    for key, items in bundles.items():
        if key in outcome.recheck:
            continue
        outcome.passed[key] = [results[key][pos] for pos in range(len(items))]
    outcome.seconds = time.perf_counter() - began
    return outcome


class HelperProcess:
    """A child ``python -m greencert.validation.worker ARGS...`` spoken to by pickles on its stdin/stdout.

    The child imports greencert as this process does (Airflow puts plugins/ on sys.path
    itself, not on PYTHONPATH). Use as a context manager: the child is killed if still alive.
    """

    what = "helper process"

    def __init__(self, *args: str, pass_fds: tuple[int, ...] = ()) -> None:
        import greencert

        env = dict(os.environ)
        package_root = str(Path(greencert.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("GX_ANALYTICS_ENABLED", "false")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greencert.validation.worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=pass_fds,
        )

    def send(self, message: Any) -> None:
        assert self.process.stdin is not None
        try:
            pickle.dump(message, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the child died: receive() reports its exit status

    def end_input(self) -> None:
        """No more messages: the child's reader thread ends."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def receive(self) -> Any:
        """The child's next answer; an exception it sent back is raised here."""
        assert self.process.stdout is not None
        try:
            answer = pickle.load(self.process.stdout)
        except (EOFError, pickle.UnpicklingError):
            code = self.process.wait()
            raise RuntimeError(f"{self.what} exited with status {code} (its stderr has the reason)") from None
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ValidatorProcess(HelperProcess):
    """:func:`validate_batch` in a child process that imports Great Expectations as soon as it starts.

    Importing ``great_expectations`` is seconds of pure-Python work. In a
    thread it would hold the GIL against the main thread's array work; in its
    own process it runs on the second core. Stacked statistics go to the child
    by pickle (kilobytes per bundle), one chunk per :meth:`submit`; the child
    validates each chunk as soon as it has it and GX is ready, and
    :meth:`outcomes` yields the verdicts in submission order.
    (A fleet run uses :class:`greencert.fleet.FleetHelper`, which also reads
    and publishes bundles.)
    """

    what = "validation process"

    def __init__(self) -> None:
        super().__init__()
        self.submitted = 0

    def submit(self, bundles: dict[Hashable, list[SuiteStats]]) -> None:
        """Send one chunk of bundles' statistics; the child validates chunks in order."""
        self.send(bundles)
        self.submitted += 1

    def outcomes(self) -> Iterator[BatchOutcome]:
        """End the input and yield one outcome per submitted chunk, as each GX run finishes."""
        self.end_input()
        for _ in range(self.submitted):
            yield self.receive()
        self.process.wait()

    def validate(self, bundles: dict[Hashable, list[SuiteStats]]) -> BatchOutcome:
        """One chunk, one outcome."""
        self.submit(bundles)
        return next(iter(self.outcomes()))


def _read_chunks(source: IO[bytes], chunks: queue.Queue[Any]) -> None:
    """Child side: drain the parent's messages as they come (the parent never blocks on a full pipe)."""
    while True:
        try:
            chunks.put(pickle.load(source))
        except EOFError:
            break
        except Exception as exc:  # a truncated or foreign stream: reported to the parent
            chunks.put(RuntimeError(f"helper process could not read its input: {exc}"))
            break
    chunks.put(None)


class ChildSide:
    """The child's end: answers on the original stdout, messages from stdin read by a thread.

    Anything a library prints goes to stderr (stdout carries pickles only). The child only
    validates pandas frames: GX treats SQLAlchemy as optional and loads its SQL support when
    it is installed (Airflow installs it), so hiding it saves about a quarter of the import.
    """

    def __init__(self) -> None:
        self.answer = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        if "sqlalchemy" not in sys.modules:
            sys.modules["sqlalchemy"] = None  # type: ignore[assignment]
        self.messages: queue.Queue[Any] = queue.Queue()
        self.reader = threading.Thread(
            target=_read_chunks, args=(sys.stdin.buffer, self.messages), daemon=True
        )
        self.reader.start()

    def send(self, message: Any) -> None:
        try:
            data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an exception that cannot be pickled: send its text
            data = pickle.dumps(RuntimeError(f"helper process failed: {message!r} ({exc})"))
        self.answer.write(data)
        self.answer.flush()

    def close(self) -> None:
        self.answer.close()
        # The parent ends our stdin after its last message; a reader thread still blocked in
        # a read at interpreter exit would abort the process.
        self.reader.join(timeout=60)


def import_gx_quietly() -> None:
    """Import GX with the cyclic collector paused, then freeze what was imported.

    Importing GX builds a few million objects, none of them garbage: the collector's passes
    over them were ~15 % of the import.
    """
    gc.disable()
    try:
        _gx()
    finally:
        gc.freeze()
        gc.enable()


def serve() -> int:
    """Child side of :class:`ValidatorProcess`: import GX, then validate each chunk as it arrives."""
    child = ChildSide()
    import_gx_quietly()  # the slow import happens while the parent is still reading bundles
    while (chunk := child.messages.get()) is not None:
        outcome: Any
        if isinstance(chunk, BaseException):
            outcome = chunk
        else:
            try:
                outcome = validate_batch(chunk)
            except Exception as exc:  # sent back and raised in the parent
                outcome = exc
        child.send(outcome)
    child.close()
    return 0

"""Every case of the bad-bundle corpus is rejected by ``greencert certify`` and by the DAG.

For each case: a non-zero exit (a handled GreenCert error, not a traceback) or a
failed task, a message that names the problem and where it is (file and line,
row, column, key or time, as declared by the case), and nothing published.
"""

from __future__ import annotations

import json
import re
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_harness import REPO, airflow_env, migrate, run_airflow
from corpus.bad_bundles import CASES, GARBAGE_BYTES, write_corpus

pytestmark = pytest.mark.integration

NAMES = sorted(CASES)
# GreenCert's own exit statuses for bad input (errors.py): 2 malformed bundle, 3 failed validation.
HANDLED_EXIT = {2, 3}
# The installed console script when there is one (./dev installs it), else the same entry point by module.
_SCRIPT = Path(sys.executable).with_name("greencert")
GREENCERT = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "greencert.cli"]


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "GX_ANALYTICS_ENABLED": "false"}


def certify_cli(bundle: Path, out: Path, address_space: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    return subprocess.run(
        [*GREENCERT, "certify", str(bundle), "--out", str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        preexec_fn=limit,
        timeout=600,
        check=False,
    )


def published_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


# Runs ``greencert.cli.main`` -- the console script's function -- once per case in ONE process, so
# Great Expectations is imported once instead of per case; stderr and exit status are captured per case
# exactly as the console script would produce them (main() prints the error and returns the status).
_DRIVER = """
import contextlib, io, json, sys, traceback
from greencert.cli import main
results = {}
for name, bundle, out in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(["certify", bundle, "--out", out])
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = {"code": code, "stderr": err.getvalue()}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def cli_runs(
    corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str, Path]]:
    """``greencert certify BUNDLE --out OUT`` for every case, each with its own OUT."""
    outs = tmp_path_factory.mktemp("cli-out")
    jobs = [(name, str(corpus[name]), str(outs / name)) for name in NAMES]
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=1800,
        check=True,
    )
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: (results[name]["code"], results[name]["stderr"], outs / name) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_cli_rejects_with_problem_and_place_and_publishes_nothing(name: str, cli_runs) -> None:
    case = CASES[name]
    code, message, out = cli_runs[name]
    assert code in HANDLED_EXIT, f"exit {code}\n{message[-3000:]}"
    if case.exit_code is not None:
        assert code == case.exit_code, f"exit {code}, documented {case.exit_code}\n{message[-3000:]}"
    assert "Traceback" not in message
    assert message.startswith("error: "), message
    assert case.problem in message, message
    for fragment in case.where:
        assert fragment in message, f"{fragment!r} not in {message}"
    for fragment in case.absent:
        assert fragment not in message, f"{fragment!r} (bytes outside the bundle) quoted in {message}"
    assert published_files(out) == []


def test_the_corpus_covers_the_issue_list() -> None:
    # Each named kind of bad input of the issue has at least one case.
    required = {
        "power_negative", "power_nan", "power_infinite", "power_above_declared_device_limit",
        "power_unit_unknown", "gauge_with_energy_unit", "counter_with_power_unit",
        "timestamps_out_of_order", "timestamps_duplicated", "timestamps_without_time_zone",
        "timestamps_outside_the_period", "timestamps_in_milliseconds", "declared_device_without_samples",
        "period_of_zero_length", "period_of_negative_length", "coverage_below_minimum",
        "token_counter_only_decreases", "tokens_but_no_power", "power_but_no_tokens",
        "grid_file_missing_hours", "csv_wrong_delimiter", "csv_truncated_last_line", "csv_header_only",
        "parquet_wrong_column_types", "empty_file", "garbage_file_of_2_gb", "manifest_not_yaml",
        "manifest_unknown_key", "label_with_control_character", "label_with_markup",
        "site_with_parent_directory", "deployment_with_parent_directory",
    }  # fmt: skip
    assert required <= set(CASES)


def test_the_corpus_covers_the_hostile_inputs_of_issue_13() -> None:
    required = {
        "manifest_duplicate_key", "manifest_loosens_max_gap", "manifest_loosens_max_device_power",
        "token_counter_absurd_jump", "power_file_is_a_symlink_outside", "manifest_is_a_symlink",
        "site_with_trailing_newline", "site_named_keys", "deployment_named_index", "site_with_a_dot",
        "manifest_deeply_nested", "period_in_year_9999", "parquet_uint64_token_counter",
        "manifest_not_utf8", "tokens_file_is_a_directory", "empty_file",
    }  # fmt: skip
    assert required <= set(CASES)


@pytest.mark.parametrize("name", ["power_negative", "label_with_markup"])
def test_the_console_command_itself_exits_non_zero_with_the_message(
    name: str, corpus: dict[str, Path], tmp_path: Path
) -> None:
    proc = certify_cli(corpus[name], tmp_path / "out")
    assert proc.returncode in HANDLED_EXIT
    assert proc.stdout == ""
    assert CASES[name].problem in proc.stderr and all(w in proc.stderr for w in CASES[name].where)
    assert published_files(tmp_path / "out") == []


def test_2_gb_garbage_is_rejected_from_its_first_kilobytes_within_a_small_memory_limit(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    bundle = corpus["garbage_file_of_2_gb"]
    assert (bundle / "power.csv").stat().st_size == GARBAGE_BYTES
    limit = 512 * 1024**2  # a quarter of the file: reading it whole cannot fit
    proc = certify_cli(bundle, tmp_path / "out", address_space=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no header line in the first 65536 bytes" in proc.stderr
    assert published_files(tmp_path / "out") == []
    # The limit does bind: a process that reads the file into memory dies under it.
    control = subprocess.run(
        [sys.executable, "-c", f"open({str(bundle / 'power.csv')!r}, 'rb').read()"],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        check=False,
    )
    assert control.returncode != 0 and "MemoryError" in control.stderr


# ---------------------------------------------------------------- the same corpus through the DAG


@pytest.fixture(scope="module")
def dag_run(corpus: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ``airflow dags test`` run whose fleet has one deployment per case (a mapped group each)."""
    root = tmp_path_factory.mktemp("dag")
    fleet = {
        "registry": str(root / "registry"),
        "work_dir": str(root / "work"),
        "deployments": [
            {"deployment": name, "source": {"kind": "bundle", "path": str(corpus[name])}} for name in NAMES
        ],
    }
    config = root / "fleet.yaml"
    config.write_text(yaml.safe_dump(fleet))
    env = airflow_env(root / "home")
    migrate(env)
    proc = run_airflow(
        ["dags", "test", "green_certification", "2026-01-02", "-c", json.dumps({"config_path": str(config)})],
        env,
        timeout=3600,
    )
    with sqlite3.connect(root / "home" / "airflow.db") as db:
        states = db.execute(
            "select task_id, map_index, state from task_instance where dag_id = 'green_certification'"
        ).fetchall()
    return {"proc": proc, "states": states, "registry": root / "registry"}


def _errors_for(output: str, bundle: Path) -> list[str]:
    """The GreenCert errors raised by the tasks for ``bundle`` (their message names its path)."""
    pattern = re.compile(r"^greencert\.errors\.\w+: (.*)$", re.M)
    tag = re.compile(re.escape(str(bundle)) + r"(?=[/:\s]|$)")
    return [m for m in pattern.findall(output) if tag.search(m)]


def test_dag_run_fails_and_publishes_nothing(dag_run: dict) -> None:
    proc = dag_run["proc"]
    assert proc.returncode != 0
    assert "DagRun Finished" in proc.stdout and "state=failed" in proc.stdout
    registry: Path = dag_run["registry"]
    assert published_files(registry) == []
    states = dag_run["states"]
    assert not [s for s in states if s[0] == "certify_deployment.publish" and s[2] == "success"]


@pytest.mark.parametrize("name", NAMES)
def test_dag_task_fails_with_problem_and_place(name: str, corpus: dict[str, Path], dag_run: dict) -> None:
    case = CASES[name]
    index = NAMES.index(name)  # map index = position in the fleet config
    by_task = {task: state for task, i, state in dag_run["states"] if i == index}
    assert by_task["certify_deployment.extract"] == "success"
    failed = [t for t, s in by_task.items() if s == "failed"]
    assert failed, by_task
    assert by_task["certify_deployment.publish"] in ("upstream_failed", None), by_task
    errors = _errors_for(dag_run["proc"].stdout + dag_run["proc"].stderr, corpus[name])
    assert any(case.problem in e and all(w in e for w in case.where) for e in errors), errors

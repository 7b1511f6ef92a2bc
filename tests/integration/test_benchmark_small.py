"""The benchmarks run at CI size, and GreenCert's per-device energies equal DuckDB's.

A correctness cross-check, not a timing test: the timings are printed by the
benchmark and never asserted (docs/performance.md has the full-size figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _small_run(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    """``benchmarks/<script> --small --no-linearity``; the run and the figures file it wrote."""
    figures = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / script),
            "--small",
            "--no-linearity",
            "--cache",
            str(tmp_path / "cache"),
            "--json",
            str(figures),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, figures


def test_small_benchmark_runs_and_energies_match_duckdb(tmp_path: Path) -> None:
    proc, figures = _small_run("fleet_day.py", tmp_path)
    assert "ratio GreenCert / DuckDB" in proc.stdout
    result = json.loads(figures.read_text())
    (size,) = result["sizes"].values()
    (run,) = size["runs"]
    # 2 deployments of 160 GPUs, every one certified, every GPU's energy equal to DuckDB's trapezoid.
    assert size["generated"]["gpu_samples"] == 320 * 5761
    assert run["greencert"]["certificates"] == 2 and run["greencert"]["failures"] == {}
    assert run["devices_compared"] == 320
    assert run["max_relative_difference"] < 1e-9
    assert result["summary"]["peak_mb"] > 0


def test_single_bundle_benchmark_runs_and_energies_match_duckdb(tmp_path: Path) -> None:
    """The per-bundle path on one bundle of all the GPUs (CI size), cross-checked against DuckDB."""
    _, figures = _small_run("single_bundle.py", tmp_path)
    result = json.loads(figures.read_text())
    (size,) = result["sizes"].values()
    (run,) = size["runs"]
    # One deployment of 40 nodes x 8 GPUs at 15 s over the day (both ends): 320 x 5,761 rows.
    assert size["generated"]["gpu_samples"] == 320 * 5761 and size["generated"]["deployments"] == 1
    # A signed certificate for the day was published (the benchmark's folder is gone by now).
    assert Path(run["greencert"]["certificate"]).name.endswith(".20260101T0000Z-20260102T0000Z.json")
    assert run["devices_compared"] == 320
    assert run["max_relative_difference"] < 1e-9
    assert result["summary"]["peak_mb"] > 0

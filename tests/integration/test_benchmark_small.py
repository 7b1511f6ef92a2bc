"""The fleet-day benchmark runs at CI size, and GreenCert's per-device energies equal DuckDB's.

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


def test_small_benchmark_runs_and_energies_match_duckdb(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "fleet_day.py"),
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

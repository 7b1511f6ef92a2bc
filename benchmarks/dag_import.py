"""How long importing each DAG file takes beyond importing ``airflow.sdk`` itself (target: < 1 s).

    python benchmarks/dag_import.py [--repeat 5]

Each measurement is a fresh interpreter (as the DAG processor parses a file):
import ``airflow.sdk``, then time loading the DAG file the way Airflow does
(``importlib`` from its path), and list the heavy modules the file pulled in.
Imports run from compiled bytecode (private ``PYTHONPYCACHEPREFIX``, filled by
a first, unmeasured run), as on an installed system. Prints the median and
the worst run per file; figures, not assertions (tests/integration/test_fleet_month.py
checks deterministically that no heavy module is imported).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("great_expectations", "pandas", "numpy", "pyarrow", "pint", "duckdb", "scipy")

PROBE = """
import importlib.util, json, sys, time
began = time.perf_counter()
import airflow.sdk
sdk = time.perf_counter() - began
before = set(sys.modules)
path = sys.argv[1]
began = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dag = time.perf_counter() - began
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(sys.argv[2].split(",")))
print(json.dumps({"sdk": sdk, "dag": dag, "heavy": heavy}))
"""


def probe(dag_file: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(dag_file), ",".join(HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=str(REPO),
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def environment(home: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "PYTHONPATH": str(REPO / "plugins"),
            "PYTHONPYCACHEPREFIX": str(pycache),
        }
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pycache", type=Path, default=REPO / "build" / "benchmark-cache" / "pycache")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "n/a"
    print(f"DAG import time beyond airflow.sdk ({args.repeat} fresh interpreters per file, load {load})")
    worst_over = 0.0
    with tempfile.TemporaryDirectory(prefix="greencert-dagimport-") as tmp:
        env = environment(Path(tmp), args.pycache)
        for dag_file in sorted((REPO / "dags").glob("*.py")):
            probe(dag_file, env)  # fills the bytecode cache; not measured
            runs = [probe(dag_file, env) for _ in range(args.repeat)]
            dag = [r["dag"] for r in runs]
            sdk = statistics.median(r["sdk"] for r in runs)
            heavy = sorted({m for r in runs for m in r["heavy"]})
            worst_over = max(worst_over, max(dag))
            print(
                f"  {dag_file.name:36s} median {statistics.median(dag):.3f} s, worst {max(dag):.3f} s "
                f"(airflow.sdk itself {sdk:.2f} s); heavy modules: {', '.join(heavy) or 'none'}"
            )
    print(f"worst DAG file: {worst_over:.3f} s beyond airflow.sdk (target < 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

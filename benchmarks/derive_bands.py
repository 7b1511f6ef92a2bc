"""Derive GreenCert 2026.3 energy band edges from published measurements.

Table: benchmarks/published_energy.csv (ML.ENERGY Leaderboard v3 GPU energy per output
token, source per row). Full-stack factor for a node-metered deployment: Google,
"Measuring the environmental impact of delivering AI at Google scale" (arXiv 2508.15734,
2025) splits a prompt's energy into accelerators 58 %, host CPU and DRAM 25 %, idle
provisioned capacity 10 %, data-centre overhead 8 %. The graded 2026.3 figure is that full
stack: GPU energy x (58 + 25 + 10) / 58 (host and idle provisioned capacity, the factors the
scheme applies when they are not metered: plugins/greencert/data/boundary-2026.3.yaml) x PUE.
Facility overhead: PUE 1.2, the top of the 1.1-1.2 range for the best facilities
(GB 40879-2021 grade 1 is PUE <= 1.20; Germany's EnEfG asks new sites for <= 1.2).

Rule per AI Energy Score size class (active parameters <=20B, <=66B, >66B): the A edge is
the least efficient *best* H100 configuration of the class at full stack, rounded up to
two significant digits; each further edge doubles (EU label style A-G, 6 edges).

    python benchmarks/derive_bands.py            # print table and edges
    python benchmarks/derive_bands.py --check F  # exit 1 unless scheme F has these edges
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import yaml

TABLE = Path(__file__).with_name("published_energy.csv")
KWH_PER_MTOK_PER_J_PER_TOKEN = 1e6 / 3.6e6  # 1 J/token = 0.2778 kWh/Mtok
NODE_OVER_GPU = (58 + 25) / 58  # accelerator + host over accelerator (Google 2025)
IDLE_CAPACITY_OVER_IT = 10 / (58 + 25)  # idle provisioned machines over serving machines (Google 2025)
FULL_STACK_OVER_GPU = NODE_OVER_GPU * (1 + IDLE_CAPACITY_OVER_IT)  # = (58 + 25 + 10) / 58
PUE = 1.2
CLASSES = (("<=20B", 20.0), ("<=66B", 66.0), (">66B", None))
EDGES = 6


def full_stack_kwh_per_mtok(gpu_j_per_token: float) -> float:
    return gpu_j_per_token * KWH_PER_MTOK_PER_J_PER_TOKEN * FULL_STACK_OVER_GPU * PUE


def size_class(active_b: float) -> str:
    for name, limit in CLASSES:
        if limit is None or active_b <= limit:
            return name
    raise AssertionError


def round_up(x: float, digits: int = 2) -> float:
    exp = math.floor(math.log10(x)) - digits + 1
    return float(f"{math.ceil(x / 10.0**exp - 1e-9) * 10.0**exp:.{digits}g}")


def load_table(path: Path = TABLE) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["active_params_billions"] = float(row["active_params_billions"])
        row["gpu_joules_per_token"] = float(row["gpu_joules_per_token"])
        row["size_class"] = size_class(row["active_params_billions"])
        row["full_stack_kwh_per_mtok"] = full_stack_kwh_per_mtok(row["gpu_joules_per_token"])
    return rows


def derive(rows: list[dict]) -> dict[str, list[float]]:
    edges = {}
    for name, _ in CLASSES:
        best = [r["full_stack_kwh_per_mtok"] for r in rows
                if r["size_class"] == name and r["config"] == "best" and r["gpu_model"] == "H100"]
        a_edge = round_up(max(best))
        edges[name] = [float(f"{a_edge * 2**i:.6g}") for i in range(EDGES)]
    return edges


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", type=Path, help="scheme YAML whose size_classes must match")
    args = p.parse_args(argv)
    rows = load_table()
    print(f"full-stack factor over GPU energy {FULL_STACK_OVER_GPU:.4f} (node/GPU {NODE_OVER_GPU:.4f} x idle capacity "
          f"{1 + IDLE_CAPACITY_OVER_IT:.4f}) x PUE {PUE}")
    print(f"{'model':22} {'gpu':5} {'config':15} {'J/tok':>7} {'kWh/Mtok':>9} class")
    for r in rows:
        print(f"{r['model']:22} {r['gpu_model']:5} {r['config']:15} {r['gpu_joules_per_token']:7.3f} "
              f"{r['full_stack_kwh_per_mtok']:9.4f} {r['size_class']}")
    edges = derive(rows)
    for name, e in edges.items():
        print(f"{name:6} upper edges A..F kWh/Mtok: {e}")
    if args.check:
        raw = yaml.safe_load(args.check.read_text(encoding="utf-8"))
        got = {c["name"]: [float(x) for x in c["energy_band_edges"]] for c in raw["size_classes"]}
        if got != edges:
            print(f"MISMATCH: {args.check} has {got}", file=sys.stderr)
            return 1
        print(f"{args.check}: edges match")
    return 0


if __name__ == "__main__":
    sys.exit(main())

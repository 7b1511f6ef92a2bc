"""Single-bundle benchmark: the per-bundle path on one 8,000-GPU deployment against DuckDB.

    python benchmarks/single_bundle.py                # one bundle, 8,000 GPUs x 24 h at 15 s (46 M rows)
    python benchmarks/single_bundle.py --small        # CI size (seconds)
    python benchmarks/single_bundle.py --repeat 3     # alternate the two sides 3 times (shared machines)

The workload is one fleet-day of the simulated fleet (``greencert.sources.fleet``) whose nodes all
serve one deployment (``FleetSpec(one_deployment=True)``): a single bundle, the largest a
deployment-day makes. Each side runs in a fresh Python process, as an Airflow task would:

* GreenCert: ``greencert.pipeline.certify``, the per-bundle path the DAG, the CLI and ``verify``
  use (validate every row with the GX suites, integrate, carbon, grade, sign, publish with
  evidence). Its wall time runs from process start to the certificate's publication; then the
  process computes the per-device energies (``compute_figures``) for the cross-check, outside the
  timed part (its peak memory is that of the computation stage, already part of ``certify``);
* DuckDB: the per-device trapezoid of ``benchmarks/fleet_day.py`` over the bundle's power.parquet.

It prints wall, CPU and peak memory (``ru_maxrss``) of both sides, their ratio at full and half
size, and checks the per-device energies agree (relative 1e-9). Exit status 0 when the run worked
and the energies agree; the targets (issue 15: faster than DuckDB, peak under 1 GB, twice the rows
at most 2.1x the time) are printed, not enforced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_day import (  # noqa: E402  (the sibling benchmark's shared helpers)
    DAY,
    DEFAULT_SCHEME,
    DUCKDB_QUERY,
    PLUGINS,
    REPO,
    _compare,
    _cpu_s,
    _loadavg,
    _peak_mb,
    _signing_key,
)
from fleet_day import (
    _child as fleet_child,
)

SMALL_SCALE = 0.04  # 40 nodes, 320 GPUs: 1.8 M rows in the one bundle


def _child(args: list[str], cache: Path) -> tuple[float, dict]:
    # The child times itself from this launch time (to publication, not to its exit).
    return fleet_child([*args, "--launched", repr(time.time())], cache, __file__)


def phase_generate(scale: float, out: Path) -> dict:
    from greencert.sources.fleet import FleetSpec, write_fleet_day

    began = time.perf_counter()
    folder = write_fleet_day(FleetSpec(scale=scale, one_deployment=True), DAY, out)
    index = json.loads((folder / "fleet.json").read_text())
    (bundle,) = [p for p in folder.iterdir() if p.is_dir()]
    return {
        "seconds": time.perf_counter() - began,
        "bundle": str(bundle),
        "gpu_samples": index["gpu_samples"],
        "deployments": len(index["deployments"]),
    }


class ProcessTree:
    """Peak memory (sum of RSS) and CPU of this process and every descendant, sampled every 20 ms.

    The fold's pool workers are children of multiprocessing's fork server, not of this process, so
    ``getrusage`` (self or children) never sees them; polling the tree with psutil does.
    """

    def __init__(self) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._cpu: dict[int, float] = {}
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        rss = 0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[proc.pid] = times.user + times.system
            except psutil.Error:  # ended between the listing and the reading
                continue
        self.peak_mb = max(self.peak_mb, rss / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._sample()

    def stop(self) -> tuple[float, float]:
        """(tree CPU seconds, tree peak MB); this process's own CPU from getrusage (exact)."""
        self._stop.set()
        self._thread.join()
        self._sample()
        others = sum(cpu for pid, cpu in self._cpu.items() if pid != self._me.pid)
        return _cpu_s() + others, self.peak_mb


def phase_greencert(bundle: Path, out: Path, scheme: Path, key: Path, launched: float) -> dict:
    tree = ProcessTree()
    from greencert.pipeline import certify

    shutil.rmtree(out, ignore_errors=True)
    certificate = certify(bundle, out / "registry", scheme, out / "work", key, pdf=False)
    wall = time.time() - launched
    cpu, peak = _cpu_s(), _peak_mb()
    tree_cpu, tree_peak = tree.stop()
    # The cross-check's energies, after the timed part.
    from greencert.bundle import open_bundle
    from greencert.compute.metrics import compute_figures
    from greencert.grading import load_scheme

    figures = compute_figures(open_bundle(bundle), load_scheme(scheme))
    (out / "energies.json").write_text(json.dumps(figures.device_energy_kwh))
    return {
        "wall": wall,
        "cpu_s": cpu,
        "peak_mb": peak,
        "tree_cpu_s": tree_cpu,
        "tree_peak_mb": tree_peak,
        "certificate": certificate,
    }


def phase_duckdb(bundle: Path, out: Path, launched: float) -> dict:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    result = con.execute(DUCKDB_QUERY.format(pattern=f"{bundle}/power.parquet")).fetchall()
    wall = time.time() - launched
    (out / "energies.json").write_text(json.dumps({d: j / 3.6e6 for d, j in result}))
    return {"wall": wall, "cpu_s": _cpu_s(), "peak_mb": _peak_mb(), "devices": len(result)}


def _workload(cache: Path, scale: float) -> tuple[Path, dict]:
    folder = cache / f"one-deployment-scale-{scale:g}"
    marker = folder / "generated.json"
    generator = hashlib.sha256((PLUGINS / "greencert" / "sources" / "fleet.py").read_bytes()).hexdigest()
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("generator_sha256") == generator and Path(info["bundle"]).is_dir():
            return Path(info["bundle"]), info
    shutil.rmtree(folder, ignore_errors=True)
    _, info = _child(["--phase", "generate", "--scale", str(scale), "--out", str(folder)], cache)
    info["generator_sha256"] = generator
    marker.write_text(json.dumps(info))
    return Path(info["bundle"]), info


def run_size(cache: Path, scale: float, repeat: int, scheme: Path, key: Path, work: Path) -> dict:
    bundle, gen = _workload(cache, scale)
    print(f"scale {scale:g}: one bundle of {gen['gpu_samples']:,} GPU samples", flush=True)
    runs = []
    for r in range(repeat):
        order = ("greencert", "duckdb") if r % 2 == 0 else ("duckdb", "greencert")
        pair: dict = {"order": list(order), "load_before": _loadavg()}
        for side in order:
            out = work / f"{side}-{scale:g}-{r}"
            args = ["--phase", side, "--bundle", str(bundle), "--out", str(out)]
            if side == "greencert":
                args += ["--scheme", str(scheme), "--key", str(key)]
            _, info = _child(args, cache)
            pair[side] = info
        pair["load_after"] = _loadavg()
        devices, worst = _compare(
            work / f"greencert-{scale:g}-{r}" / "energies.json",
            work / f"duckdb-{scale:g}-{r}" / "energies.json",
        )
        if worst > 1e-9:
            raise SystemExit(f"per-device energies differ from DuckDB's by {worst:.3g} (relative)")
        pair["devices_compared"], pair["max_relative_difference"] = devices, worst
        g, d = pair["greencert"], pair["duckdb"]
        pair["ratio"] = g["wall"] / d["wall"]
        print(
            f"  run {r + 1}/{repeat} (load {pair['load_before']} -> {pair['load_after']}): "
            f"GreenCert {g['wall']:.2f} s (CPU {g['cpu_s']:.1f} s, with workers {g['tree_cpu_s']:.1f} s), "
            f"{g['peak_mb']:,.0f} MB (all processes {g['tree_peak_mb']:,.0f} MB) | "
            f"DuckDB {d['wall']:.2f} s (CPU {d['cpu_s']:.1f} s), {d['peak_mb']:,.0f} MB | "
            f"ratio {pair['ratio']:.2f} | {devices} device energies agree to {worst:.2g}",
            flush=True,
        )
        runs.append(pair)
    return {"generated": gen, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help=f"CI size (scale {SMALL_SCALE})")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-linearity", action="store_true", help="full size only (no half-size run)")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "benchmark-cache")
    parser.add_argument("--scheme", type=Path, default=DEFAULT_SCHEME)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--phase", choices=("generate", "greencert", "duckdb"), help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        launched = args.launched if args.launched is not None else time.time()
        if args.phase == "generate":
            info = phase_generate(args.scale, args.out)
        elif args.phase == "greencert":
            info = phase_greencert(args.bundle, args.out, args.scheme, args.key, launched)
        else:
            info = phase_duckdb(args.bundle, args.out, launched)
        print(json.dumps(info))
        return 0

    scale = SMALL_SCALE if args.small else args.scale
    args.cache.mkdir(parents=True, exist_ok=True)
    key = _signing_key(args.cache)
    print(f"GreenCert single-bundle benchmark, scale {scale:g} (load {_loadavg()})")
    results = {}
    with tempfile.TemporaryDirectory(prefix="greencert-single-", dir=args.cache) as tmp:
        for size in (scale,) if args.no_linearity else (scale / 2, scale):
            results[size] = run_size(args.cache, size, args.repeat, args.scheme, key, Path(tmp))

    def median(size: float, side: str, what: str) -> float:
        return statistics.median(r[side][what] for r in results[size]["runs"])

    g, d = median(scale, "greencert", "wall"), median(scale, "duckdb", "wall")
    peak = max(r["greencert"]["peak_mb"] for r in results[scale]["runs"])
    tree_peak = max(r["greencert"]["tree_peak_mb"] for r in results[scale]["runs"])
    print("\nsummary (medians over runs)")
    print(
        f"  GreenCert per-bundle path {g:8.2f} s   peak {peak:,.0f} MB (target < 1,000 MB); "
        f"all its processes together {tree_peak:,.0f} MB"
    )
    print(f"  DuckDB trapezoid query    {d:8.2f} s")
    print(f"  ratio GreenCert / DuckDB  {g / d:8.2f}     (target < 1.0)")
    summary = {"greencert_s": g, "duckdb_s": d, "ratio": g / d, "peak_mb": peak, "tree_peak_mb": tree_peak}
    if not args.no_linearity:
        half_peak = max(r["greencert"]["peak_mb"] for r in results[scale / 2]["runs"])
        summary["linearity"] = linearity = g / median(scale / 2, "greencert", "wall")
        print(
            f"  GreenCert full / half     {linearity:8.2f}     "
            f"(target <= 2.1; peak {half_peak:,.0f} -> {peak:,.0f} MB)"
        )
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "sizes": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

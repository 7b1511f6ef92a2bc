"""Fleet-day benchmark: GreenCert end to end against a DuckDB trapezoid query over the same Parquet files.

    python benchmarks/fleet_day.py                 # full size: 8,000 GPUs x 24 h at 15 s (46 M samples)
    python benchmarks/fleet_day.py --small         # CI size (seconds)
    python benchmarks/fleet_day.py --repeat 3      # alternate the two sides 3 times (shared machines)

The workload (``greencert simulate --fleet``) is generated once into the cache
folder and reused. Each side runs in a fresh Python process, as an Airflow task
would, and its wall time is measured from process start to exit:

* GreenCert: read every bundle, validate every row with the GX suites (stacked
  per-device statistics), integrate, carbon, grade, sign and publish the 50
  certificates (Ed25519), and save the daily partials (``greencert.fleet``);
* DuckDB: per-device trapezoidal energy, ``lag`` over device ordered by time,
  over ``*/power.parquet`` of the same folder.

Peak memory is each process's ``ru_maxrss``; for GreenCert it is the sum of
the main process and of every pool worker's own peak (each worker reports its
``ru_maxrss``; they are alive at the same time).
The per-device energies of both sides are compared (relative 1e-9), and
GreenCert's time at full and half size gives the linearity ratio.

Subprocesses get a private ``PYTHONPYCACHEPREFIX`` so imports run from compiled
bytecode, as on an installed system (the development venv is installed without
.pyc files and the shell sets ``PYTHONDONTWRITEBYTECODE``); one warm-up run
fills it. The exit status is 0 when the run worked and the energies agree;
the performance targets are printed, not enforced (CI runs the small size,
where fixed costs such as importing Great Expectations dominate).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
DAY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SMALL_SCALE = 0.04  # 40 nodes, 320 GPUs, 2 deployments: 1.8 M GPU samples
DEFAULT_SCHEME = PLUGINS / "greencert" / "schemes" / "greencert-2026.1.yaml"

DUCKDB_QUERY = """
SELECT device, sum(0.5 * (value + prev_value) * (epoch(timestamp) - epoch(prev_timestamp))) AS joules
FROM (
    SELECT device, timestamp, value,
           lag(value) OVER w AS prev_value,
           lag(timestamp) OVER w AS prev_timestamp
    FROM read_parquet('{pattern}')
    WINDOW w AS (PARTITION BY device ORDER BY timestamp)
)
GROUP BY device
"""


def _peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGINS), env.get("PYTHONPATH", "")) if p)
    env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    return env


def _child(args: list[str], cache: Path, script: str = __file__) -> tuple[float, dict]:
    """Run ``script`` (this one) in a fresh interpreter; return (wall seconds, the JSON it printed last)."""
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(script).resolve()), *args],
        env=_env(cache),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"benchmark step {args[:2]} failed with status {proc.returncode}")
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------- child phases


def phase_generate(scale: float, out: Path) -> dict:
    from greencert.sources.fleet import FleetSpec, write_fleet_day

    began = time.perf_counter()
    folder = write_fleet_day(FleetSpec(scale=scale), DAY, out)
    index = json.loads((folder / "fleet.json").read_text())
    return {
        "seconds": time.perf_counter() - began,
        "peak_mb": _peak_mb(),
        "folder": str(folder),
        "gpu_samples": index["gpu_samples"],
        "deployments": len(index["deployments"]),
    }


def phase_greencert(
    fleet_day: Path, out: Path, scheme: Path, key: Path, workers: int | None, chunk_size: int | None
) -> dict:
    from greencert.fleet import certify_fleet_day
    from greencert.fleet_day import deployment_bundles

    shutil.rmtree(out, ignore_errors=True)
    run = certify_fleet_day(
        deployment_bundles(fleet_day),
        out / "registry",
        out / "work",
        scheme,
        signing_key=key,
        pdf=False,
        partials_dir=out / "partials",
        workers=workers,
        chunk_size=chunk_size,
    )
    (out / "energies.json").write_text(json.dumps(run.device_energy_kwh))
    return {
        "phases": run.seconds,
        "peak_mb": _peak_mb(),
        # The workers' own peaks (RUSAGE_CHILDREN would give the largest one only).
        "child_peak_mb": sum(run.worker_peak_kb.values()) / 1024.0,
        "workers": run.workers,
        "chunks": run.chunks,
        # The workers' own CPU (a fork server's workers are not this process's children).
        "cpu_s": _cpu_s() + sum(run.worker_cpu_s.values()),
        "certificates": len(run.certificates),
        "failures": run.failures,
        "rows": run.rows,
        "gx_runs": run.gx_runs,
    }


def phase_duckdb(fleet_day: Path, out: Path) -> dict:
    import duckdb

    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    result = con.execute(DUCKDB_QUERY.format(pattern=f"{fleet_day}/*/power.parquet")).fetchall()
    energies = {device: joules / 3.6e6 for device, joules in result}
    (out / "energies.json").write_text(json.dumps(energies))
    return {
        "peak_mb": _peak_mb(),
        "cpu_s": _cpu_s(),
        "devices": len(energies),
        "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],
    }


def phase_warmup() -> dict:
    import duckdb  # noqa: F401
    import great_expectations  # noqa: F401

    import greencert.fleet  # noqa: F401
    from greencert.validation.gx import _gx

    _gx()
    return {}


# ----------------------------------------------------------------------------------- driver


def _workload(cache: Path, scale: float) -> tuple[Path, dict]:
    folder = cache / f"fleet-scale-{scale:g}"
    day = folder / DAY.strftime("%Y-%m-%d")
    marker = folder / "generated.json"
    # Regenerate when the generator changed (its source is part of the workload's identity).
    generator = hashlib.sha256((PLUGINS / "greencert" / "sources" / "fleet.py").read_bytes()).hexdigest()
    if marker.is_file() and (day / "fleet.json").is_file():
        info = json.loads(marker.read_text())
        if info.get("generator_sha256") == generator:
            return day, info
    shutil.rmtree(folder, ignore_errors=True)
    wall, info = _child(["--phase", "generate", "--scale", str(scale), "--out", str(folder)], cache)
    info["wall"] = wall
    info["generator_sha256"] = generator
    marker.write_text(json.dumps(info))
    return day, info


def _signing_key(cache: Path) -> Path:
    path = cache / "benchmark-signing-key.pem"
    if not path.is_file():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        path.chmod(0o600)
    return path


def _compare(a: Path, b: Path) -> tuple[int, float]:
    """Devices compared and the largest relative difference of their energies."""
    x = json.loads(a.read_text())
    y = json.loads(b.read_text())
    if set(x) != set(y):
        missing = sorted(set(x) ^ set(y))[:5]
        raise SystemExit(f"device sets differ between GreenCert and DuckDB, e.g. {missing}")
    worst = max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-300) for k in x)
    return len(x), worst


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def run_size(
    cache: Path, scale: float, repeat: int, scheme: Path, key: Path, work: Path, pool: list[str]
) -> dict:
    day, gen = _workload(cache, scale)
    rows = []
    for r in range(repeat):
        # Alternate the order, so neither side always runs on a cooler (or hotter) machine.
        order = ("greencert", "duckdb") if r % 2 == 0 else ("duckdb", "greencert")
        pair = {"load_before": _loadavg()}
        for side in order:
            out = work / f"{side}-{scale:g}-{r}"
            args = ["--phase", side, "--fleet-day", str(day), "--out", str(out)]
            if side == "greencert":
                args += ["--scheme", str(scheme), "--key", str(key), *pool]
            # Neither side may inherit the other's pending disk writes (GreenCert writes ~250 MB of
            # certificates and evidence copies): flush them before each timed run.
            os.sync()
            wall, info = _child(args, cache)
            pair[side] = {"wall": wall, **info}
        pair["load_after"] = _loadavg()
        pair["ratio"] = pair["greencert"]["wall"] / pair["duckdb"]["wall"]
        devices, worst = _compare(
            work / f"greencert-{scale:g}-{r}" / "energies.json",
            work / f"duckdb-{scale:g}-{r}" / "energies.json",
        )
        pair["devices_compared"] = devices
        pair["max_relative_difference"] = worst
        rows.append(pair)
        g = pair["greencert"]
        print(
            f"  run {r + 1}/{repeat} (load {pair['load_before']} -> {pair['load_after']}): "
            f"GreenCert {g['wall']:.2f} s (CPU {g['cpu_s']:.1f} s), {g['peak_mb'] + g['child_peak_mb']:.0f} MB "
            f"({g['peak_mb']:.0f} + {g['child_peak_mb']:.0f} in {g['workers']} workers, {g['chunks']} chunks), "
            f"{g['certificates']} certificates | DuckDB {pair['duckdb']['wall']:.2f} s "
            f"(CPU {pair['duckdb']['cpu_s']:.1f} s), "
            f"{pair['duckdb']['peak_mb']:.0f} MB | ratio {pair['ratio']:.2f} | "
            f"{devices} device energies agree to {worst:.1e}",
            flush=True,
        )
        phases = ", ".join(f"{k} {v:.2f}" for k, v in g["phases"].items())
        print(f"    GreenCert phases (s): {phases}", flush=True)
        if g["failures"]:
            raise SystemExit(f"GreenCert did not certify: {g['failures']}")
    return {"scale": scale, "generated": gen, "runs": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fleet size (1.0 = 1,000 nodes, 8,000 GPUs)")
    parser.add_argument("--small", action="store_true", help=f"CI size (scale {SMALL_SCALE})")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size, alternating the order")
    parser.add_argument("--no-linearity", action="store_true", help="skip the half-size run")
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "benchmark-cache")
    parser.add_argument("--scheme", type=Path, default=DEFAULT_SCHEME)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--workers", type=int, default=None, help="GreenCert's pool size (default: CPUs)")
    parser.add_argument("--chunk-size", type=int, default=None, help="bundles per pool task (default: auto)")
    # Internal: one phase in a fresh interpreter.
    parser.add_argument(
        "--phase", choices=("generate", "greencert", "duckdb", "warmup"), help=argparse.SUPPRESS
    )
    parser.add_argument("--fleet-day", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase:
        if args.phase == "generate":
            info = phase_generate(args.scale, args.out)
        elif args.phase == "greencert":
            info = phase_greencert(
                args.fleet_day, args.out, args.scheme, args.key, args.workers, args.chunk_size
            )
        elif args.phase == "duckdb":
            info = phase_duckdb(args.fleet_day, args.out)
        else:
            info = phase_warmup()
        print(json.dumps(info))
        return 0

    scale = SMALL_SCALE if args.small else args.scale
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    key = _signing_key(cache)
    print(f"GreenCert fleet-day benchmark, scale {scale:g} (CPUs: {os.cpu_count()}, load {_loadavg()})")
    wall, _ = _child(["--phase", "warmup"], cache)
    print(f"  bytecode warm-up run: {wall:.1f} s")
    sizes = [scale] if args.no_linearity else [scale / 2, scale]
    pool = [
        f"--{name}={value}"
        for name, value in (("workers", args.workers), ("chunk-size", args.chunk_size))
        if value
    ]
    results = {}
    with tempfile.TemporaryDirectory(prefix="greencert-bench-", dir=cache) as tmp:
        for size in sizes:
            day, gen = _workload(cache, size)
            print(
                f"scale {size:g}: {gen['gpu_samples']:,} GPU samples in {gen['deployments']} bundles "
                f"(generated in {gen['seconds']:.1f} s, peak {gen['peak_mb']:.0f} MB)",
                flush=True,
            )
            results[size] = run_size(cache, size, args.repeat, args.scheme, key, Path(tmp), pool)

    full = results[scale]["runs"]
    g_wall = statistics.median(r["greencert"]["wall"] for r in full)
    d_wall = statistics.median(r["duckdb"]["wall"] for r in full)
    peak = max(r["greencert"]["peak_mb"] + r["greencert"]["child_peak_mb"] for r in full)
    print("\nsummary (medians over runs)")
    print(f"  GreenCert end to end      {g_wall:8.2f} s   peak {peak:,.0f} MB (target < 2,500 MB)")
    print(f"  DuckDB trapezoid query    {d_wall:8.2f} s")
    print(f"  ratio GreenCert / DuckDB  {g_wall / d_wall:8.2f}     (target < 1.0)")
    summary = {
        "scale": scale,
        "greencert_s": g_wall,
        "duckdb_s": d_wall,
        "ratio": g_wall / d_wall,
        "peak_mb": peak,
    }
    if not args.no_linearity:
        half = statistics.median(r["greencert"]["wall"] for r in results[scale / 2]["runs"])
        summary["linearity"] = g_wall / half
        print(f"  GreenCert full / half     {g_wall / half:8.2f}     (target <= 2.2 for twice the samples)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "sizes": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

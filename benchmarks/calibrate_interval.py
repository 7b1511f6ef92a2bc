"""Calibration of the 95 % intervals against a truth the interval does not assume (issue 16, point 5).

Each trial simulates a deployment second by second and knows its true energy per million output
tokens exactly, from the 1-second signal and the true token count, never from the code under test.
One error source at a time is made realistic and drawn from a distribution the interval does NOT
assume; the others are exact (a PDU-class power meter reading the truth, revenue facility and IT
meters, every token counted), so that the interval's width comes mostly from the source under test
and a wrong term shows as a coverage shortfall. The bundle then goes through the same public path
as the compute stage (``compute_figures`` then ``integrity.assess``), in memory.

Sources (docs/uncertainty.md, "Calibration"):

  sampling_bursts  bursty load (bursts of 10-120 s to full power) sampled every 15, 30 or 60 s
  meter_normal     meter gain error normal, sd = half the class (5 % of meters outside their class)
  meter_edge       meter biased at the edge of its class: +-(0.9-1.0) x the class accuracy
  meter_drift      gain drifting linearly over the period from within half the class to its edge
  gaps_outage      real-shaped scrape outages: 1-3 per device of 3-20 min, late starts, bursty load
  gaps_peak        one 3-10 min gap hiding a burst to full power that no reading sees
  token_coverage   counters covering 95.5-99.5 % of the period (late start, early end, or an
                   outage ending in a counter restart), token rate following the bursty load

Usage:
  python benchmarks/calibrate_interval.py                       # 400 trials per source, 2026.2 and 2026.3
  python benchmarks/calibrate_interval.py --trials 100 --sources gaps_peak,token_coverage
Output: a Markdown table (coverage of the energy and carbon intervals per source and scheme, the
median relative width of the energy interval). Seeds are fixed: the same command gives the same table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(ROOT / "plugins"))

from greencert.bundle.manifest import parse_manifest  # noqa: E402
from greencert.bundle.reader import Bundle, DeviceShards, Series  # noqa: E402
from greencert.compute.integrity import assess  # noqa: E402
from greencert.compute.metrics import compute_figures  # noqa: E402
from greencert.grading import SCHEME_DIR, Scheme, load_scheme  # noqa: E402

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
START = T0.timestamp()
HOURS = 2
SECONDS = HOURS * 3600
CLASSES = {"pdu": 0.01, "node_meter": 0.05, "gpu_sensor": 0.10}
SEED = 20261602  # fixed, first tried
SOURCES = (
    "sampling_bursts",
    "meter_normal",
    "meter_edge",
    "meter_drift",
    "gaps_outage",
    "gaps_peak",
    "token_coverage",
)


def _series(file: str, t: np.ndarray, devices: list[str], codes: np.ndarray, **values: np.ndarray) -> Series:
    return Series(
        file=file,
        t=np.asarray(t, dtype=np.float64),
        device_codes=np.asarray(codes, dtype=np.int32),
        devices=devices,
        values={k: np.asarray(v, dtype=np.float64) for k, v in values.items()},
        row=np.arange(len(t), dtype=np.int64),
        file_format="csv",
    )


def bursty_load(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Utilisation 0..1 at 1 s: a low base that wanders, and bursts to (nearly) full load.

    Bursts arrive as a Poisson process (mean one per 4-10 min) and last 10-120 s; they are what
    a sampled meter misses and what a gap can hide.
    """
    base = rng.uniform(0.1, 0.45)
    wander = np.cumsum(rng.normal(0.0, 0.002, n))
    wander -= np.linspace(0.0, wander[-1], n)
    load = np.clip(base + wander, 0.03, 0.6)
    bursts = []
    t = 0.0
    mean_gap = rng.uniform(240.0, 600.0)
    while True:
        t += rng.exponential(mean_gap)
        if t >= n - 1:
            break
        length = int(rng.uniform(10.0, 120.0))
        a, b = int(t), min(n, int(t) + length)
        load[a:b] = np.maximum(load[a:b], rng.uniform(0.85, 1.0))
        bursts.append((a, b))
    return load, bursts


def gpu_power(load: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H100-like board power (70 W idle, 700 W at full load) with 3 % fast fluctuation."""
    # Clipped at the board's 700 W rating (power capping), so a 700 W ceiling is never exceeded.
    return np.minimum((70.0 + 630.0 * load**0.7) * (1.0 + rng.normal(0.0, 0.03, load.size)), 700.0)


@dataclass
class Trial:
    true_energy: float  # kWh per Mtok, facility basis
    true_carbon: float  # gCO2e per Mtok
    bundle: Bundle


def make_trial(
    rng: np.random.Generator, source: str, tmp: Path, max_device_power: str | None = None
) -> Trial:
    secs = np.arange(SECONDS + 1, dtype=np.float64)
    n_dev = int(rng.integers(1, 3))
    load, bursts = bursty_load(rng, secs.size)
    true_p = np.array([gpu_power(load, rng) for _ in range(n_dev)])
    # Truth: 1 s rectangles (the signal is piecewise constant per second).
    true_it_hourly = true_p[:, :-1].sum(axis=0).reshape(HOURS, 3600).sum(axis=1) / 3.6e6

    meter_class = "pdu"
    step = 15.0
    gain = np.ones(secs.size)  # exact meter unless the source is a meter source
    if source == "sampling_bursts":
        step = float(rng.choice([15.0, 30.0, 60.0]))
    if source.startswith("meter_"):
        meter_class = str(rng.choice(["pdu", "node_meter"]))
        a = CLASSES[meter_class]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        if source == "meter_normal":
            gain = np.full(secs.size, 1.0 + rng.normal(0.0, a / 2.0))
        elif source == "meter_edge":
            gain = np.full(secs.size, 1.0 + sign * a * rng.uniform(0.9, 1.0))
        else:  # drift: calibrated somewhere within half the class, drifting to the class edge
            e0, e1 = rng.uniform(-a / 2, a / 2), sign * a
            gain = 1.0 + e0 + (e1 - e0) * secs / SECONDS
    idx = np.arange(0, SECONDS + 1, int(step))
    t_rows, v_rows, c_rows = [], [], []
    for d in range(n_dev):
        keep = np.ones(idx.size, bool)
        if source == "gaps_outage":
            for _ in range(int(rng.integers(1, 4))):
                g0 = rng.uniform(0, SECONDS - 1300)
                keep &= ~((idx > g0) & (idx < g0 + rng.uniform(180, 1200)))
            if rng.random() < 0.3:  # the exporter starts late
                keep &= idx >= rng.uniform(60, 600)
        if source == "gaps_peak" and d == 0:
            # A gap of 3-10 min around a burst to full power that starts and ends inside it.
            length = rng.uniform(180.0, 600.0)
            g0 = rng.uniform(600.0, SECONDS - 600.0 - length)
            b0 = g0 + rng.uniform(30.0, 0.4 * length)
            b1 = min(g0 + length - 30.0, b0 + rng.uniform(0.4, 0.6) * length)
            sl = slice(int(b0), int(b1))
            peak = rng.uniform(0.9, 1.0)
            for dd in range(n_dev):
                true_p[dd, sl] = gpu_power(np.full(int(b1) - int(b0), peak), rng)
            load[sl] = peak
            keep &= ~((idx > g0) & (idx < g0 + length))
        t_rows.append(START + idx[keep])
        v_rows.append(np.round(true_p[d, idx[keep]] * gain[idx[keep]], 2))
        c_rows.append(np.full(int(keep.sum()), d))
    if source == "gaps_peak":  # the peak changed the truth
        true_it_hourly = true_p[:, :-1].sum(axis=0).reshape(HOURS, 3600).sum(axis=1) / 3.6e6
    devices = [f"gpu{d}" for d in range(n_dev)]
    power = _series(
        "power.csv", np.concatenate(t_rows), devices, np.concatenate(c_rows), value=np.concatenate(v_rows)
    )

    # Tokens follow the load (a burst serves more tokens); the truth counts every one of them.
    per_s = rng.poisson(900.0 * n_dev * load[:-1])
    counter = np.concatenate([[0.0], np.cumsum(per_s)]).astype(np.float64)
    true_mtok = counter[-1] / 1e6
    tok_idx = np.arange(0, SECONDS + 1, 15)
    values = counter[tok_idx] + 5000.0
    keep_t = np.ones(tok_idx.size, bool)
    if source == "token_coverage":
        missing = rng.uniform(0.005, 0.045) * SECONDS
        how = int(rng.integers(0, 3))
        if how == 0:  # the counters start late
            keep_t &= tok_idx >= missing
        elif how == 1:  # they stop early
            keep_t &= tok_idx <= SECONDS - missing
        else:  # an outage that ends in a restart: the new counter starts from 0
            g0 = rng.uniform(300.0, SECONDS - 300.0 - missing)
            keep_t &= ~((tok_idx > g0) & (tok_idx < g0 + missing))
            after = tok_idx >= g0 + missing
            restart = int(np.flatnonzero(after)[0])
            # The new pod counts from its start (first sample is its increase since start, but it
            # started at the end of the outage: what it counted before its first scrape is
            # counter[restart] - counter at the restart time, here the last 0-15 s).
            t_restart = tok_idx[restart] - rng.uniform(0.0, 15.0)
            values = np.where(after, counter[tok_idx] - counter[int(t_restart)], values)
    tokens = _series(
        "tokens.csv",
        START + tok_idx[keep_t],
        ["all"],
        np.zeros(int(keep_t.sum())),
        output_tokens=values[keep_t],
        input_tokens=values[keep_t] * 3,
    )

    # PUE from revenue-grade facility and IT counters that read the truth (+-0.5 % each assumed).
    true_pue = rng.uniform(1.1, 1.4, HOURS)
    m_idx = np.arange(0, SECONDS + 1, 300)
    hour_of = np.minimum(m_idx[:-1] // 3600, HOURS - 1)
    site_kw = rng.uniform(500, 2000, HOURS)
    it_steps = site_kw[hour_of] * 300 / 3600.0
    it_cum = np.concatenate([[0.0], np.cumsum(it_steps)])
    fac_cum = np.concatenate([[0.0], np.cumsum(it_steps * true_pue[hour_of])])
    facility_meter = _series("fac.csv", START + m_idx, ["site"], np.zeros(m_idx.size), value=1e6 + fac_cum)
    it_meter = _series("it.csv", START + m_idx, ["site"], np.zeros(m_idx.size), value=2e6 + it_cum)
    counter_spec = {"kind": "counter", "unit": "kWh", "meter_class": "revenue_meter"}
    annual = round(float(rng.uniform(100, 700)), 3)
    manifest = {
        "scope": {
            "site": "sim",
            "deployment": "cal",
            "model": "m",
            "hardware": "h",
            "active_params_billions": 8,
        },
        "period": {"start": T0.isoformat(), "end": (T0 + dt.timedelta(hours=HOURS)).isoformat()},
        "power": {
            "file": "power.csv",
            "kind": "gauge",
            "unit": "W",
            "meter_class": meter_class,
            **({"max_device_power": max_device_power} if max_device_power else {}),
        },
        "tokens": {"file": "tokens.csv"},
        "facility": {
            "meter": {"file": "fac.csv", **counter_spec},
            "it_meter": {"file": "it.csv", **counter_spec},
        },
        "grid": {"annual": annual, "unit": "gCO2e/kWh"},
        # Every provisioned device is metered: no idle-capacity estimate (not a measurement error).
        "idle_capacity": {"basis": "metered"},
    }
    bundle = Bundle(
        path=tmp,
        manifest=parse_manifest(manifest, "calibration"),
        power=DeviceShards.of_series(power),
        tokens=tokens,
        facility_meter=facility_meter,
        it_meter=it_meter,
    )
    true_fac = true_it_hourly * true_pue
    return Trial(float(true_fac.sum() / true_mtok), float(true_fac.sum() * annual / true_mtok), bundle)


@dataclass
class Result:
    source: str
    scheme: str
    trials: int
    energy_coverage: float
    carbon_coverage: float
    energy_below: int  # truth below the interval
    energy_above: int  # truth above the interval
    median_width: float  # (high - low) / truth of the energy interval


def run(
    source: str,
    trials: int,
    scheme: Scheme,
    seed: int = SEED,
    tmp: Path = Path("."),
    max_device_power: str | None = None,
) -> Result:
    """``trials`` trials of one source; the same seed gives the same truths under every scheme.

    ``max_device_power`` (e.g. "700 W", an H100 SXM's rating) is declared in each manifest: a
    tighter ceiling than the scheme's 1,500 W narrows the gap bound."""
    rng = np.random.default_rng([seed, SOURCES.index(source)])
    hits_e = hits_c = below = above = 0
    widths = []
    for _ in range(trials):
        trial = make_trial(rng, source, tmp, max_device_power)
        fig = compute_figures(trial.bundle, scheme)
        out = assess(trial.bundle, scheme, fig, {"metrics": fig.metrics()}, with_budget=False)
        lo, hi = out.intervals["energy_per_million_tokens"]
        c_lo, c_hi = out.intervals["carbon_per_million_tokens"]
        hits_e += lo <= trial.true_energy <= hi
        below += trial.true_energy < lo
        above += trial.true_energy > hi
        hits_c += c_lo <= trial.true_carbon <= c_hi
        widths.append((hi - lo) / trial.true_energy)
    label = source if not max_device_power else f"{source} (ceiling {max_device_power})"
    return Result(
        label,
        scheme.version,
        trials,
        hits_e / trials,
        hits_c / trials,
        below,
        above,
        float(np.median(widths)),
    )


def table(results: list[Result]) -> str:
    lines = [
        "| source | scheme | trials | energy coverage | truth below / above | carbon coverage | median width (energy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.source} | {r.scheme} | {r.trials} | {r.energy_coverage:.3f} | {r.energy_below} / {r.energy_above} "
            f"| {r.carbon_coverage:.3f} | {r.median_width:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> list[Result]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--sources", default=",".join(SOURCES))
    p.add_argument("--schemes", default="2026.2,2026.3")
    p.add_argument("--max-device-power", default=None, help='declared in every manifest, e.g. "700 W"')
    args = p.parse_args(argv)
    results = []
    t0 = time.perf_counter()
    for source in args.sources.split(","):
        for version in args.schemes.split(","):
            scheme = load_scheme(SCHEME_DIR / f"greencert-{version}.yaml")
            results.append(run(source, args.trials, scheme, max_device_power=args.max_device_power))
    out(table(results))
    out(f"\n{args.trials} trials per source and scheme, seed {SEED}, {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()

"""Calibration: the 95 % intervals contain the true figure in 93-97 % of independent simulated fleets.

Each trial simulates a small deployment whose true energy is known exactly: GPU power at 1-second
resolution (a wandering load, fast sensor-scale fluctuations), metered by a meter of a random class
with a random calibration error inside its class, sampled every 5-30 s, with unbridged gaps; exact
token counters; node parts from a node meter or an unknown node/GPU ratio; a declared PUE (random
ISO/IEC 30134-2 category) or facility and IT meters; an annual grid factor or hourly intensities,
some of them estimated. The truth is computed from the 1-second signal, never from the code under
test. The same public path as the compute stage runs on each simulated bundle
(``compute_figures`` then ``integrity.assess``), in memory so that 1,000 trials stay fast.

For inputs the data cannot reveal (a meter's calibration error, the true PUE, the grid's true
intensity, the true node/GPU ratio), the simulated truth is drawn from the range the defaults
state: the test checks the propagation (integration, gaps, sampling noise, Monte Carlo quantiles,
rounding), not the width of those policy ranges (docs/uncertainty.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from greencert.bundle.manifest import parse_manifest
from greencert.bundle.reader import GRID_COLUMNS, GRID_OPTIONAL_COLUMNS, Bundle, Series, read_series
from greencert.bundle.shards import DeviceShards
from greencert.compute.integrity import assess
from greencert.compute.metrics import compute_figures
from greencert.grading import SCHEME_DIR, load_scheme

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
HOURS = 3
SECONDS = HOURS * 3600
TRIALS = 1000
CLASSES = {"gpu_sensor": 0.10, "node_meter": 0.05, "pdu": 0.01}
PUE_HALFWIDTH = {1: 0.07, 2: 0.05, 3: 0.03, None: 0.10}
GRID_HALFWIDTH = {"measured": 0.05, "estimated": 0.15, "annual": 0.20}
REVENUE = 0.005
NODE_RATIO = (1.10, 1.80)
NODE_METER = 0.05


def series(file: str, t: np.ndarray, devices: list[str], codes: np.ndarray, **values: np.ndarray) -> Series:
    return Series(
        file=file,
        t=np.asarray(t, dtype=np.float64),
        device_codes=np.asarray(codes, dtype=np.int32),
        devices=devices,
        values={k: np.asarray(v, dtype=np.float64) for k, v in values.items()},
        row=np.arange(len(t), dtype=np.int64),
        file_format="csv",
    )


def fluctuation(rng: np.random.Generator, n: int, sd: float, tau: float) -> np.ndarray:
    """Stationary noise with correlation time ~tau seconds (white noise through an exponential kernel)."""
    k = np.exp(-np.arange(int(6 * tau) + 1) / tau)
    k /= np.sqrt(np.sum(k * k))
    return np.convolve(rng.normal(0.0, sd, n + k.size - 1), k, mode="valid")


def trial(rng: np.random.Generator, tmp: Path, scheme) -> tuple[float, float, list[float], list[float]]:
    start = T0.timestamp()
    secs = np.arange(SECONDS + 1, dtype=np.float64)  # truth at 1 s, both ends
    n_dev = int(rng.integers(1, 4))
    meter_class = str(rng.choice(list(CLASSES)))
    step = float(rng.choice([5.0, 15.0, 30.0]))

    # --- true GPU power, 1 s resolution: slow wander of the load, fast fluctuations
    base = rng.uniform(0.15, 0.9)
    wander = np.cumsum(rng.normal(0.0, 0.004, secs.size))
    wander -= np.linspace(0, wander[-1], secs.size) * rng.uniform(0, 1)
    load = np.clip(base + wander, 0.02, 1.0)
    true_p = np.array(
        [(70.0 + 630.0 * load**0.6) * (1.0 + fluctuation(rng, secs.size, 0.05, 3.0)) for _ in range(n_dev)]
    )
    true_gpu_hourly = true_p[:, :-1].sum(axis=0).reshape(HOURS, 3600).sum(axis=1) / 3.6e6  # kWh

    # --- the meter: class accuracy as a systematic error within the class, sampled every `step`
    a = CLASSES[meter_class]
    gain = 1.0 + rng.uniform(-a, a)
    idx = np.arange(0, SECONDS + 1, int(step))
    t_rows, v_rows, c_rows = [], [], []
    for d in range(n_dev):
        keep = np.ones(idx.size, bool)
        if rng.random() < 0.4:  # an unbridged gap of 2.5-10 minutes
            g0 = rng.uniform(0, SECONDS - 700)
            keep &= ~((idx > g0) & (idx < g0 + rng.uniform(150, 600)))
        if rng.random() < 0.1:  # the device starts reporting late
            keep &= idx >= rng.uniform(150, 400)
        t_rows.append(start + idx[keep])
        v_rows.append(np.round(true_p[d, idx[keep]] * gain, 1))
        c_rows.append(np.full(int(keep.sum()), d))
    devices = [f"dev{d}" for d in range(n_dev)]
    power = series(
        "power.csv", np.concatenate(t_rows), devices, np.concatenate(c_rows), value=np.concatenate(v_rows)
    )

    # --- exact token counters every 15 s
    per_s = rng.poisson(2000.0 * load[:-1])
    counter = np.concatenate([[0.0], np.cumsum(per_s)]) + 12345.0
    tok_idx = np.arange(0, SECONDS + 1, 15)
    tokens = series(
        "tokens.csv",
        start + tok_idx,
        ["all"],
        np.zeros(tok_idx.size),
        output_tokens=counter[tok_idx],
        input_tokens=counter[tok_idx] * 3,
    )
    true_mtok = (counter[-1] - counter[0]) / 1e6

    manifest = {
        "scope": {
            "site": "sim",
            "deployment": "cal",
            "model": "m",
            "hardware": "h",
            "active_params_billions": 8,
        },
        "period": {"start": T0.isoformat(), "end": (T0 + dt.timedelta(hours=HOURS)).isoformat()},
        "power": {"file": "power.csv", "kind": "gauge", "unit": "W", "meter_class": meter_class},
        "tokens": {"file": "tokens.csv"},
    }
    meters: dict[str, Series] = {}

    # --- node parts
    if meter_class == "gpu_sensor" and rng.random() < 0.5:
        host = n_dev * rng.uniform(80, 150) + rng.uniform(0.05, 0.2) * true_p.sum(axis=0)
        true_node = true_p.sum(axis=0) + host
        true_it_hourly = true_node[:-1].reshape(HOURS, 3600).sum(axis=1) / 3.6e6
        n_idx = np.arange(0, SECONDS + 1, 15)
        node_gain = 1.0 + rng.uniform(-NODE_METER, NODE_METER)
        meters["node"] = series(
            "node.csv", start + n_idx, ["node0"], np.zeros(n_idx.size), value=true_node[n_idx] * node_gain
        )
        manifest["meters"] = [
            {
                "name": "node",
                "layer": "node",
                "file": "node.csv",
                "kind": "gauge",
                "unit": "W",
                "meter_class": "node_meter",
            }
        ]
    elif meter_class == "gpu_sensor":
        true_it_hourly = true_gpu_hourly * rng.uniform(*NODE_RATIO)
    else:
        true_it_hourly = true_gpu_hourly

    # --- PUE
    facility_meter = it_meter = None
    if rng.random() < 0.7:
        category = [1, 2, 3, None][int(rng.integers(0, 4))]
        declared = round(float(rng.uniform(1.1, 1.5)), 2)
        true_pue = np.full(
            HOURS, declared * (1.0 + rng.uniform(-PUE_HALFWIDTH[category], PUE_HALFWIDTH[category]))
        )
        manifest["facility"] = {"pue": declared, **({"pue_category": category} if category else {})}
    else:
        true_pue = rng.uniform(1.1, 1.4, HOURS)
        site_kw = rng.uniform(500, 2000, HOURS)
        m_idx = np.arange(0, SECONDS + 1, 300)
        hour_of = np.minimum(m_idx[:-1] // 3600, HOURS - 1)
        it_steps = site_kw[hour_of] * 300 / 3600.0  # kWh per 5 min
        it_cum = np.concatenate([[0.0], np.cumsum(it_steps)])
        fac_cum = np.concatenate([[0.0], np.cumsum(it_steps * true_pue[hour_of])])
        e_f, e_i = 1.0 + rng.uniform(-REVENUE, REVENUE, 2)
        facility_meter = series(
            "fac.csv", start + m_idx, ["site"], np.zeros(m_idx.size), value=1e6 + fac_cum * e_f
        )
        it_meter = series("it.csv", start + m_idx, ["site"], np.zeros(m_idx.size), value=2e6 + it_cum * e_i)
        spec = {"kind": "counter", "unit": "kWh", "meter_class": "revenue_meter"}
        manifest["facility"] = {"meter": {"file": "fac.csv", **spec}, "it_meter": {"file": "it.csv", **spec}}
    true_facility_hourly = true_it_hourly * true_pue

    # --- grid
    grid = None
    if rng.random() < 0.5:
        annual = round(float(rng.uniform(100, 700)), 3)
        true_intensity = np.full(HOURS, annual * (1.0 + rng.uniform(-0.2, 0.2)))
        manifest["grid"] = {"annual": annual, "unit": "gCO2e/kWh"}
    else:
        reported = np.round(rng.uniform(100, 700, HOURS), 3)
        estimated = rng.random(HOURS) < 0.3
        w_meas = rng.uniform(-GRID_HALFWIDTH["measured"], GRID_HALFWIDTH["measured"])
        w_est = rng.uniform(-GRID_HALFWIDTH["estimated"], GRID_HALFWIDTH["estimated"])
        true_intensity = reported * (1.0 + np.where(estimated, w_est, w_meas))
        lines = ["timestamp,intensity,is_estimated"] + [
            f"{int(start + 3600 * h)},{reported[h]},{str(bool(estimated[h])).lower()}" for h in range(HOURS)
        ]
        (tmp / "grid.csv").write_text("\n".join(lines) + "\n")
        grid = read_series(
            tmp / "grid.csv", GRID_COLUMNS, GRID_OPTIONAL_COLUMNS, ("intensity",), None, "grid"
        )
        manifest["grid"] = {"file": "grid.csv", "unit": "gCO2e/kWh"}

    bundle = Bundle(
        path=tmp,
        manifest=parse_manifest(manifest, "calibration"),
        power=DeviceShards.of_series(power),
        tokens=tokens,
        grid=grid,
        facility_meter=facility_meter,
        it_meter=it_meter,
        meters=meters,
    )
    fig = compute_figures(bundle, scheme)
    figures = {"metrics": fig.metrics()}
    result = assess(bundle, scheme, fig, figures, with_budget=False)
    true_energy = true_facility_hourly.sum() / true_mtok
    true_carbon = float(np.sum(true_facility_hourly * true_intensity)) / true_mtok
    return (
        true_energy,
        true_carbon,
        result.intervals["energy_per_million_tokens"],
        result.intervals["carbon_per_million_tokens"],
    )


@pytest.mark.slow
def test_95_percent_intervals_contain_the_truth_93_to_97_percent_of_the_time(tmp_path: Path) -> None:
    # The 2026.2 model, whose truths this test draws from the ranges it assumes; 2026.3 is calibrated
    # against truths it does not assume in test_interval_calibration.py.
    scheme = load_scheme(SCHEME_DIR / "greencert-2026.2.yaml")
    rng = np.random.default_rng(20260209)  # fixed: the test is deterministic; first seed tried
    hits_e = hits_c = 0
    widths = []
    for _ in range(TRIALS):
        true_e, true_c, iv_e, iv_c = trial(rng, tmp_path, scheme)
        hits_e += iv_e[0] <= true_e <= iv_e[1]
        hits_c += iv_c[0] <= true_c <= iv_c[1]
        widths.append((iv_e[1] - iv_e[0]) / true_e)
    coverage_e, coverage_c = hits_e / TRIALS, hits_c / TRIALS
    print(
        f"coverage over {TRIALS} trials: energy {coverage_e:.3f}, carbon {coverage_c:.3f}; "
        f"median relative width of the energy interval {np.median(widths):.3f}"
    )
    assert 0.93 <= coverage_e <= 0.97
    assert 0.93 <= coverage_c <= 0.97

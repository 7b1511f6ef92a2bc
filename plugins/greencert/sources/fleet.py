"""Deterministic fleet-scale telemetry: a 1,000-node, 8,000-GPU inference fleet, day by day.

One fleet-day at full size (``scale=1``) is

* 8,000 GPU power gauges (1,000 nodes x 8 GPUs) sampled every 15 s over the
  day, both ends included: 8,000 x 5,761 = 46.09 million samples;
* 1,000 node meters (wall power of each server, 15 s);
* one facility meter (the whole fleet's intake) and the IT meter it is
  compared with (UPS output, i.e. the sum of the node meters), 15 s;
* output/input token counters for 50 deployments;
* hourly grid intensity for the 3 sites.

Layout: one evidence bundle per deployment (20 nodes, 160 GPUs each), in a
folder per day::

    <out>/<YYYY-MM-DD>/fleet.json           index: spec, deployments, row counts
    <out>/<YYYY-MM-DD>/<deployment>/         an ordinary greencert-bundle/1

Why per deployment rather than one fleet bundle: a certificate is about one
deployment (one model on one site), and its evidence is copied next to it and
re-checked by ``greencert verify``. A fleet bundle would make every one of the
50 certificates carry, hash and re-verify all 46 M rows. Per-deployment
bundles keep each certificate's evidence to its own 0.9 M rows, keep the
Airflow mapping per deployment, and let a fleet run stream bundle by bundle
in bounded memory. The single facility meter and IT meter (5,761 rows each)
are copied into every bundle, because the measured PUE of each certificate
is computed from them.

Each day includes the sample at its end boundary (which is also the next
day's first sample), so 30 daily integrals add up exactly to the month's.

Generation is per bundle (about 1 M rows at a time), so memory does not grow
with the fleet. Same spec, same seed, same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from greencert.bundle.writer import write_bundle
from greencert.fleet_day import INDEX_FORMAT, INDEX_NAME
from greencert.sources.simulate import IDLE_W, TDP_W, seed_for

FULL_NODES = 1_000
FULL_DEPLOYMENTS = 50
GPUS_PER_NODE = 8

# Models served by the fleet, cycled over deployments. GPU-only J per output token
# at full load, a little above the best steady-state H100 figures of the ML.ENERGY
# leaderboard v3 (real serving mixes request sizes).
MODELS: tuple[tuple[str, str, float, float], ...] = (
    # (short name, model, active params in billions, J/token at full load per GPU-fleet)
    ("llama8b", "meta-llama/Llama-3.1-8B-Instruct", 8, 0.09),
    ("qwen14b", "Qwen/Qwen3-14B", 14, 0.15),
    ("coder32b", "Qwen/Qwen2.5-Coder-32B-Instruct", 32, 0.28),
    ("llama70b", "meta-llama/Llama-3.1-70B-Instruct", 70, 0.45),
    ("qwen235b", "Qwen/Qwen3-235B-A22B-FP8", 22, 1.0),
)

# Three sites with different grids: hourly intensity = base - swing x daytime dip + noise.
SITES: tuple[tuple[str, float, float], ...] = (
    ("dc-east-1", 380.0, 90.0),
    ("dc-north-1", 45.0, 12.0),
    ("dc-cn-1", 560.0, 60.0),
)


@dataclass(frozen=True)
class FleetSpec:
    """Size of the simulated fleet; ``scale`` multiplies nodes and deployments.

    ``one_deployment``: every node serves a single deployment (one bundle of all the GPUs: the
    largest single bundle a fleet-day makes, for the single-bundle benchmark).
    """

    scale: float = 1.0
    step_seconds: float = 15.0
    seed: int = 0
    one_deployment: bool = False

    @property
    def nodes(self) -> int:
        return max(1, round(FULL_NODES * self.scale))

    @property
    def deployments(self) -> int:
        if self.one_deployment:
            return 1
        return max(1, min(self.nodes, round(FULL_DEPLOYMENTS * self.scale)))

    def nodes_of(self, deployment: int) -> range:
        """Contiguous block of node numbers serving ``deployment``."""
        lo = deployment * self.nodes // self.deployments
        hi = (deployment + 1) * self.nodes // self.deployments
        return range(lo, hi)

    def deployment_name(self, deployment: int) -> str:
        return f"d{deployment:02d}-{MODELS[deployment % len(MODELS)][0]}"

    def site_of(self, deployment: int) -> tuple[str, float, float]:
        return SITES[deployment % len(SITES)]


# Every value is a function of (series, absolute time) only, never of which day is being
# generated: the sample at a day's end boundary is bit-identical to the next day's first sample,
# and a month's days join up exactly. Randomness therefore comes from a counter-based hash
# (SplitMix64 of a per-series key and the absolute sample number) instead of a stateful generator.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic), in place where possible."""
    x = x + _GOLDEN
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _key(seed: int, *parts: object) -> np.uint64:
    return np.uint64(seed_for(seed, *parts))


def _noise(keys: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-variance noise for each series key (rows) at absolute sample numbers ``k``.

    Irwin-Hall: the sum of the four 16-bit uniforms of one 64-bit hash, centred and scaled
    (bounded at +-3.5 sigma, which suits sensor noise).
    """
    h = _mix(np.asarray(keys, dtype=np.uint64)[:, None] ^ (k[None, :] * _GOLDEN))
    total = np.zeros(h.shape)
    for lane in range(4):
        total += ((h >> np.uint64(16 * lane)) & np.uint64(0xFFFF)).astype(np.float64)
    total *= 1.0 / 65536.0
    total -= 2.0
    total *= 3.0**0.5
    return total


def _uniform(seed: int, *parts: object) -> float:
    return (seed_for(seed, *parts) >> 11) / float(1 << 53)


def _sample_numbers(t: np.ndarray, step: float) -> np.ndarray:
    return np.round(t / step).astype(np.uint64)


def _load(spec: FleetSpec, dep: int, t: np.ndarray) -> np.ndarray:
    """Utilisation in [0, 1] of one deployment: diurnal, phase-shifted per deployment, slow wander."""
    hour = (t % 86400.0) / 3600.0
    phase = -2.0 + 4.0 * _uniform(spec.seed, "fleet-phase", dep)
    diurnal = 0.5 - 0.5 * np.cos((hour - 3.0 - phase) / 24.0 * 2 * np.pi)
    # Wander: knots every 15 minutes of absolute time, interpolated.
    knot_step = 900.0
    first, last = np.floor(t[0] / knot_step), np.ceil(t[-1] / knot_step)
    knots = np.arange(first, last + 1.0)
    values = 0.05 * _noise(np.array([_key(spec.seed, "fleet-wander", dep)]), knots.astype(np.uint64))[0]
    wander = np.interp(t, knots * knot_step, values)
    peak = 0.75 + 0.1 * (dep % 3)
    return np.clip(peak * np.clip(diurnal * 1.15 - 0.1, 0.0, 1.0) + 0.08 + wander, 0.0, 1.0)


def _fleet_pue(t: np.ndarray) -> np.ndarray:
    """Facility overhead follows the outside temperature: worst mid-afternoon."""
    hour = (t % 86400.0) / 3600.0
    return 1.2 + 0.06 * np.sin((hour - 9.0) / 24.0 * 2 * np.pi)


def _timestamps(t: np.ndarray) -> pa.Array:
    return pa.array(np.round(t * 1e6).astype(np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC"))


def _gauge_table(t: np.ndarray, names: list[str], values: np.ndarray) -> pa.Table:
    """Rows grouped by device, time-ordered within a device; device dictionary-encoded."""
    n = len(names)
    codes = np.repeat(np.arange(n, dtype=np.int32), t.size)
    return pa.table(
        {
            "timestamp": _timestamps(np.tile(t, n)),
            "device": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names, pa.string())),
            "value": pa.array(values.reshape(-1)),
        }
    )


def _gpu_names(spec: FleetSpec, dep: int) -> list[str]:
    name = spec.deployment_name(dep)
    return [f"{name}-n{n:04d}-gpu{g}" for n in spec.nodes_of(dep) for g in range(GPUS_PER_NODE)]


def _deployment_curves(spec: FleetSpec, dep: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected power of one GPU at the deployment's load (W), and each GPU's efficiency factor."""
    load = _load(spec, dep, t)
    names = _gpu_names(spec, dep)
    # Each GPU draws a little more or less at the same load (silicon lottery): fixed per GPU.
    efficiency = (
        1.0
        + 0.03
        * _noise(
            np.array([_key(spec.seed, "fleet-silicon", name) for name in names]), np.zeros(1, np.uint64)
        )[:, 0]
    )
    return IDLE_W + (TDP_W - IDLE_W) * load**0.6, efficiency


def _node_power(spec: FleetSpec, dep: int, t: np.ndarray) -> np.ndarray:
    """Wall power of each 8-GPU server (n_nodes x n_t, W): GPUs + host (CPUs, fans, NICs) + PSU loss.

    Computed from the GPUs' expected draw rather than from every GPU sample, so the
    fleet's IT total (needed before any bundle is written) costs 1,000 series, not 8,000.
    """
    curve, efficiency = _deployment_curves(spec, dep, t)
    gpus = efficiency.reshape(-1, GPUS_PER_NODE).sum(axis=1)[:, None] * curve[None, :]
    keys = np.array([_key(spec.seed, "fleet-node", n) for n in spec.nodes_of(dep)])
    noise = _noise(keys, _sample_numbers(t, spec.step_seconds))
    return np.round((gpus + 900.0 + 0.12 * gpus) / 0.94 * (1.0 + 0.005 * noise), 1)


def _gpu_power(spec: FleetSpec, dep: int, t: np.ndarray) -> np.ndarray:
    """Power of every GPU of one deployment (n_gpus x n_t, W), with 1.5 % sensor noise."""
    curve, efficiency = _deployment_curves(spec, dep, t)
    keys = np.array([_key(spec.seed, "fleet-gpu", name) for name in _gpu_names(spec, dep)])
    gpu = _noise(keys, _sample_numbers(t, spec.step_seconds))
    gpu *= 0.015
    gpu += 1.0
    gpu *= curve[None, :]
    gpu *= efficiency[:, None]
    np.clip(gpu, 40.0, 720.0, out=gpu)
    return np.round(gpu, 2, out=gpu)


def _day_fleet_it(spec: FleetSpec, t: np.ndarray) -> np.ndarray:
    """IT power (sum of all node meters) of the whole fleet, in W."""
    total = np.zeros(t.size)
    for dep in range(spec.deployments):
        total += _node_power(spec, dep, t).sum(axis=0)
    return total


def _restarts(dep: int, lo: float, hi: float) -> list[float]:
    """Engine restarts in [lo, hi]: 00:00 UTC on the 1st of each month; every seventh deployment
    also daily at 12:00 UTC."""
    found = []
    day = dt.datetime.fromtimestamp(lo, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.timestamp() <= hi:
        if day.day == 1 and day.timestamp() >= lo:
            found.append(day.timestamp())
        noon = day.timestamp() + 43200.0
        if dep % 7 == 3 and lo <= noon <= hi:
            found.append(noon)
        day += dt.timedelta(days=1)
    return sorted(found)


def _last_restart(dep: int, t0: float) -> float:
    """The latest restart at or before ``t0``."""
    month_start = dt.datetime.fromtimestamp(t0, dt.UTC).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return max(_restarts(dep, month_start.timestamp(), t0))


def _tokens(
    spec: FleetSpec, dep: int, t: np.ndarray, n_gpu: int, joules_per_token: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative output and input token counters: zero at each restart, then the sum of increments.

    The counter at time t sums the increments since the last restart before t, so the
    increments are generated from that restart on (at most a month of one series).
    """
    step = spec.step_seconds
    since = _last_restart(dep, float(t[0]))
    history = np.arange(since, t[-1] + step / 2, step)
    load = _load(spec, dep, history)
    rate = n_gpu * TDP_W / joules_per_token * load**1.4 * step
    k = _sample_numbers(history, step)
    noise = _noise(np.array([_key(spec.seed, "fleet-out", dep), _key(spec.seed, "fleet-in", dep)]), k)
    out_inc = np.maximum(np.round(rate * (1.0 + 0.05 * noise[0])), 0.0)
    in_inc = np.maximum(np.round(3.0 * rate * (1.0 + 0.1 * noise[1])), 0.0)
    out_inc[0] = in_inc[0] = 0.0  # the reading at the restart itself
    output = np.cumsum(out_inc)
    prompt = np.cumsum(in_inc)
    for restart in _restarts(dep, since, float(history[-1])):
        if restart > since:
            # The counters read zero at the restart and count up again (a Prometheus reset).
            at = int(np.searchsorted(history, restart))
            output[at:] -= output[at]
            prompt[at:] -= prompt[at]
    keep = history.size - t.size
    return output[keep:], prompt[keep:]


def _grid(site: tuple[str, float, float], hours: np.ndarray, seed: int) -> np.ndarray:
    name, base, swing = site
    hod = (hours % 86400.0) / 3600.0
    dip = np.clip(np.sin((hod - 6.0) / 12.0 * np.pi), 0.0, None)
    noise = _noise(np.array([_key(seed, "fleet-grid", name)]), _sample_numbers(hours, 3600.0))[0]
    return np.round(np.maximum(base - swing * dip + base * 0.03 * noise, 1.0), 1)


def write_fleet_day(spec: FleetSpec, day: dt.datetime, out: Path) -> Path:
    """Write every deployment bundle of the fleet for the UTC day starting at ``day``; return its folder."""
    start = day.astimezone(dt.UTC)
    end = start + dt.timedelta(days=1)
    day_key = start.strftime("%Y-%m-%d")
    folder = Path(out) / day_key
    folder.mkdir(parents=True, exist_ok=True)
    t0, t1 = start.timestamp(), end.timestamp()
    t = np.arange(t0, t1 + spec.step_seconds / 2, spec.step_seconds)  # both ends included
    hours = np.arange(t0, t1, 3600.0)

    # The facility meter covers the whole fleet, so its IT reference is the fleet's total.
    it_w = _day_fleet_it(spec, t)
    meter_noise = _noise(
        np.array([_key(spec.seed, "fleet-facility")]), _sample_numbers(t, spec.step_seconds)
    )[0]
    facility_kw = np.round(it_w * _fleet_pue(t) * (1.0 + 0.002 * meter_noise) / 1e3, 3)
    it_kw = np.round(it_w / 1e3, 3)
    facility = _gauge_table(t, ["facility"], facility_kw[None, :])
    it_meter = _gauge_table(t, ["ups-output"], it_kw[None, :])

    entries = []
    for dep in range(spec.deployments):
        name = spec.deployment_name(dep)
        short, model, params, jpt = MODELS[dep % len(MODELS)]
        site = spec.site_of(dep)
        nodes = spec.nodes_of(dep)
        gpu = _gpu_power(spec, dep, t)
        node = _node_power(spec, dep, t)
        gpu_names = _gpu_names(spec, dep)
        node_names = [f"node{n:04d}" for n in nodes]
        output, prompt = _tokens(spec, dep, t, len(gpu_names), jpt)
        manifest = {
            "format": "greencert-bundle/1",
            "scope": {
                "site": site[0],
                "deployment": name,
                "model": model,
                "hardware": f"{len(nodes)}x 8x NVIDIA H100 80GB HBM3",
                "active_params_billions": params,
                "gpu_type": "NVIDIA H100 80GB HBM3",
                "gpu_count": len(gpu_names),
                "serving_engine": "vllm",
                "engine_version": "0.11.1",
                "precision": "fp8" if "FP8" in model else "bf16",
            },
            "period": {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"},
            "power": {
                "file": "power.parquet",
                "kind": "gauge",
                "unit": "W",
                "meter_class": "gpu_sensor",
                "devices": gpu_names,
            },
            "tokens": {"file": "tokens.parquet"},
            "facility": {
                "meter": {"file": "facility.parquet", "kind": "gauge", "unit": "kW"},
                "it_meter": {"file": "it.parquet", "kind": "gauge", "unit": "kW"},
            },
            "grid": {
                "file": "grid.parquet",
                "unit": "gCO2e/kWh",
                "source": "simulated hourly location-based",
                "zone": site[0],
            },
            "meters": [
                {
                    "name": "node",
                    "layer": "node",
                    "file": "nodes.parquet",
                    "kind": "gauge",
                    "unit": "W",
                    "meter_class": "node_meter",
                    "max_device_power": "12 kW",
                    "devices": node_names,
                }
            ],
            "provenance": {
                "source": "greencert simulate --fleet",
                "scale": spec.scale,
                "seed": spec.seed,
                "step_seconds": spec.step_seconds,
            },
        }
        tables = {
            "power.parquet": _gauge_table(t, gpu_names, gpu),
            "nodes.parquet": _gauge_table(t, node_names, node),
            "tokens.parquet": pa.table(
                {
                    "timestamp": _timestamps(t),
                    "instance": pa.DictionaryArray.from_arrays(
                        pa.array(np.zeros(t.size, np.int32)), pa.array([name])
                    ),
                    "output_tokens": pa.array(output),
                    "input_tokens": pa.array(prompt),
                }
            ),
            "grid.parquet": pa.table(
                {
                    "timestamp": _timestamps(hours),
                    "intensity": pa.array(_grid(site, hours, spec.seed)),
                }
            ),
            "facility.parquet": facility,
            "it.parquet": it_meter,
        }
        write_bundle(folder / name, manifest, tables)
        entries.append({"deployment": name, "site": site[0], "gpus": len(gpu_names), "nodes": len(nodes)})
        del gpu, node, tables

    index = {
        "format": INDEX_FORMAT,
        "spec": asdict(spec),
        "period": {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"},
        "samples_per_series": int(t.size),
        "gpu_samples": int(t.size) * spec.nodes * GPUS_PER_NODE,
        "deployments": entries,
    }
    from greencert.atomic import atomic_write_text

    atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return folder

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
from greencert.sources.simulate import IDLE_W, TDP_W, seed_for

FULL_NODES = 1_000
FULL_DEPLOYMENTS = 50
GPUS_PER_NODE = 8
INDEX_NAME = "fleet.json"

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
    """Size of the simulated fleet; ``scale`` multiplies nodes and deployments."""

    scale: float = 1.0
    step_seconds: float = 15.0
    seed: int = 0

    @property
    def nodes(self) -> int:
        return max(1, round(FULL_NODES * self.scale))

    @property
    def deployments(self) -> int:
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


def _load(t: np.ndarray, deployment_seed: int, peak: float) -> np.ndarray:
    """Utilisation in [0, 1] of one deployment: diurnal, phase-shifted per deployment, slow wander."""
    rng = np.random.default_rng(deployment_seed)
    hour = (t % 86400.0) / 3600.0
    phase = rng.uniform(-2.0, 2.0)
    diurnal = 0.5 - 0.5 * np.cos((hour - 3.0 - phase) / 24.0 * 2 * np.pi)
    knots = t[:: max(1, t.size // 96)]
    wander = np.interp(t, knots, rng.normal(0.0, 0.05, knots.size))
    return np.clip(peak * np.clip(diurnal * 1.15 - 0.1, 0.0, 1.0) + 0.08 + wander, 0.0, 1.0)


def _peak(dep: int) -> float:
    return 0.75 + 0.1 * (dep % 3)


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


def _deployment_curves(
    spec: FleetSpec, dep: int, t: np.ndarray, day_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Expected power of one GPU at the deployment's load (W), and each GPU's efficiency factor."""
    load = _load(t, seed_for(spec.seed, "fleet-load", dep, day_key), _peak(dep))
    n_gpu = len(spec.nodes_of(dep)) * GPUS_PER_NODE
    # Each GPU draws a little more or less at the same load (silicon lottery): fixed per GPU, not per day.
    efficiency = np.random.default_rng(seed_for(spec.seed, "fleet-silicon", dep)).normal(1.0, 0.03, n_gpu)
    return IDLE_W + (TDP_W - IDLE_W) * load**0.6, efficiency


def _node_power(spec: FleetSpec, dep: int, t: np.ndarray, day_key: str) -> np.ndarray:
    """Wall power of each 8-GPU server (n_nodes x n_t, W): GPUs + host (CPUs, fans, NICs) + PSU loss.

    Computed from the GPUs' expected draw rather than from every GPU sample, so the
    fleet's IT total (needed before any bundle is written) costs 1,000 series, not 8,000.
    """
    curve, efficiency = _deployment_curves(spec, dep, t, day_key)
    gpus = efficiency.reshape(-1, GPUS_PER_NODE).sum(axis=1)[:, None] * curve[None, :]
    rng = np.random.default_rng(seed_for(spec.seed, "fleet-node", dep, day_key))
    return np.round((gpus + 900.0 + 0.12 * gpus) / 0.94 * rng.normal(1.0, 0.005, gpus.shape), 1)


def _gpu_power(spec: FleetSpec, dep: int, t: np.ndarray, day_key: str) -> np.ndarray:
    """Power of every GPU of one deployment (n_gpus x n_t, W), with 1.5 % sensor noise."""
    curve, efficiency = _deployment_curves(spec, dep, t, day_key)
    rng = np.random.default_rng(seed_for(spec.seed, "fleet-gpu", dep, day_key))
    gpu = curve[None, :] * efficiency[:, None]
    gpu *= rng.normal(1.0, 0.015, gpu.shape)
    np.clip(gpu, 40.0, 720.0, out=gpu)
    return np.round(gpu, 2, out=gpu)


def _day_fleet_it(spec: FleetSpec, t: np.ndarray, day_key: str) -> np.ndarray:
    """IT power (sum of all node meters) of the whole fleet, in W."""
    total = np.zeros(t.size)
    for dep in range(spec.deployments):
        total += _node_power(spec, dep, t, day_key).sum(axis=0)
    return total


def _tokens(
    spec: FleetSpec, dep: int, t: np.ndarray, day_key: str, n_gpu: int, joules_per_token: float
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed_for(spec.seed, "fleet-tokens", dep, day_key))
    load = _load(t, seed_for(spec.seed, "fleet-load", dep, day_key), _peak(dep))
    rate = n_gpu * TDP_W / joules_per_token * load**1.4
    per_step = rng.poisson(rate * spec.step_seconds).astype(np.float64)
    per_step[0] = 0.0
    output = 2.0e9 + np.cumsum(per_step)
    prompt = 6.0e9 + np.cumsum(rng.poisson(per_step * 3.0).astype(np.float64))
    if dep % 7 == 3:
        # An engine restart: both counters start again from zero (Prometheus reset semantics).
        at = t.size // 2
        output[at:] -= output[at - 1]
        prompt[at:] -= prompt[at - 1]
    return output, prompt


def _grid(site: tuple[str, float, float], hours: np.ndarray, seed: int, day_key: str) -> np.ndarray:
    name, base, swing = site
    rng = np.random.default_rng(seed_for(seed, "fleet-grid", name, day_key))
    hod = (hours % 86400.0) / 3600.0
    dip = np.clip(np.sin((hod - 6.0) / 12.0 * np.pi), 0.0, None)
    return np.round(np.maximum(base - swing * dip + rng.normal(0.0, base * 0.03, hours.size), 1.0), 1)


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
    it_w = _day_fleet_it(spec, t, day_key)
    rng = np.random.default_rng(seed_for(spec.seed, "fleet-facility", day_key))
    facility_kw = np.round(it_w * _fleet_pue(t) * rng.normal(1.0, 0.002, t.size) / 1e3, 3)
    it_kw = np.round(it_w / 1e3, 3)
    facility = _gauge_table(t, ["facility"], facility_kw[None, :])
    it_meter = _gauge_table(t, ["ups-output"], it_kw[None, :])

    entries = []
    for dep in range(spec.deployments):
        name = spec.deployment_name(dep)
        short, model, params, jpt = MODELS[dep % len(MODELS)]
        site = spec.site_of(dep)
        nodes = spec.nodes_of(dep)
        gpu = _gpu_power(spec, dep, t, day_key)
        node = _node_power(spec, dep, t, day_key)
        gpu_names = [f"{name}-n{n:04d}-gpu{g}" for n in nodes for g in range(GPUS_PER_NODE)]
        node_names = [f"node{n:04d}" for n in nodes]
        output, prompt = _tokens(spec, dep, t, day_key, len(gpu_names), jpt)
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
                    "intensity": pa.array(_grid(site, hours, spec.seed, day_key)),
                }
            ),
            "facility.parquet": facility,
            "it.parquet": it_meter,
        }
        write_bundle(folder / name, manifest, tables)
        entries.append({"deployment": name, "site": site[0], "gpus": len(gpu_names), "nodes": len(nodes)})
        del gpu, node, tables

    index = {
        "format": "greencert-fleet-day/1",
        "spec": asdict(spec),
        "period": {"start": f"{start:%Y-%m-%dT%H:%M:%SZ}", "end": f"{end:%Y-%m-%dT%H:%M:%SZ}"},
        "samples_per_series": int(t.size),
        "gpu_samples": int(t.size) * spec.nodes * GPUS_PER_NODE,
        "deployments": entries,
    }
    from greencert.certificate.publish import atomic_write_text

    atomic_write_text(folder / INDEX_NAME, json.dumps(index, indent=1) + "\n")
    return folder


def deployment_bundles(fleet_day: Path) -> list[Path]:
    """Bundles of a fleet-day folder, in the order of its index (or by name without one)."""
    fleet_day = Path(fleet_day)
    index = fleet_day / INDEX_NAME
    if index.is_file():
        entries = json.loads(index.read_text())["deployments"]
        return [fleet_day / e["deployment"] for e in entries]
    return sorted(p.parent for p in fleet_day.glob("*/manifest.yaml"))

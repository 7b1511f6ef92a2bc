"""Deterministic, realistic telemetry for a sample fleet.

Load follows a diurnal curve with quiet nights and short idle stretches. GPU
power runs between an idle floor (~70 W on an H100) and the 700 W TDP.
Throughput is set so that energy per token at full load matches published
steady-state measurements (ML.ENERGY leaderboard v3, vLLM on H100) and rises
at low load, as those measurements show (6-10x at low concurrency).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greencert.bundle.writer import write_bundle
from greencert.times import stamp

IDLE_W = 70.0
TDP_W = 700.0


@dataclass(frozen=True)
class DeploymentProfile:
    site: str
    deployment: str
    model: str
    active_params_billions: float
    gpus: int
    # GPU-only J per output token at full load (steady state, high concurrency).
    joules_per_token_at_full_load: float
    peak_load: float
    serving_engine: str = "vllm"
    engine_version: str = "0.11.1"
    precision: str = "bf16"
    input_output_ratio: float = 3.0
    # Further meter layers for reconciliation (docs/uncertainty.md): DCGM's energy counter beside
    # the power gauge, a Redfish node meter, a rack PDU; and vLLM's running-requests gauge.
    gpu_energy_counter: bool = True
    node_meter: bool = False
    pdu_meter: bool = False
    max_concurrency: int = 64
    # Mean output tokens per completed request (vllm:request_success_total follows the tokens).
    output_tokens_per_request: float = 250.0


SAMPLE_FLEET: tuple[DeploymentProfile, ...] = (
    DeploymentProfile("dc-east-1", "chat-8b", "meta-llama/Llama-3.1-8B-Instruct", 8, 1, 0.12, 0.9),
    DeploymentProfile("dc-east-1", "assist-14b", "Qwen/Qwen3-14B", 14, 1, 0.2, 0.7, node_meter=True),
    DeploymentProfile(
        "dc-cn-1", "code-32b", "Qwen/Qwen2.5-Coder-32B-Instruct", 32, 2, 0.3, 0.8, gpu_energy_counter=False
    ),
    DeploymentProfile(
        "dc-east-1",
        "chat-70b",
        "meta-llama/Llama-3.1-70B-Instruct",
        70,
        4,
        0.5,
        0.85,
        node_meter=True,
        pdu_meter=True,
        max_concurrency=128,
    ),
)

SITES = {
    # WUE: an illustrative declared value for the simulated site (ISO/IEC 30134-9, L/kWh), so the
    # sample certificates show the water statement; dc-cn-1 declares none.
    "dc-east-1": {"pue": 1.2, "grid": "hourly", "base": 380.0, "swing": 90.0, "wue": 0.3},
    "dc-cn-1": {
        "pue": 1.3,
        "grid": "annual",
        "annual": 530.6,
        "source": "China national average grid emission factor 2023 (MEE/NBS): 0.5306 kgCO2/kWh",
    },
}


def _water(site: dict) -> dict:
    if "wue" not in site:
        return {}
    return {
        "wue": {
            "value": site["wue"],
            "source": "simulated site: illustrative declared WUE, not a measurement",
            "period": "simulated",
        }
    }


def seed_for(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def load_curve(t: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    """Utilisation in [0, 1]: diurnal (peak mid-afternoon UTC), idle at night, some noise."""
    hour = (t % 86400.0) / 3600.0
    diurnal = 0.5 - 0.5 * np.cos((hour - 3.0) / 24.0 * 2 * np.pi)
    load = peak * np.clip(diurnal * 1.15 - 0.1, 0.0, 1.0)
    # Slow random wander, smooth at the 15 s scale.
    wander = np.interp(
        t, t[:: max(1, t.size // 96)], rng.normal(0, 0.05, size=t[:: max(1, t.size // 96)].size)
    )
    return np.clip(load + wander, 0.0, 1.0)


def simulate_deployment(
    profile: DeploymentProfile,
    start: dt.datetime,
    end: dt.datetime,
    target: Path,
    step_s: float = 15.0,
    file_format: str = "csv",
    seed: int = 0,
) -> Path:
    """Write one deployment's bundle for [start, end) at ``target``; same inputs, same bytes."""
    rng = np.random.default_rng(seed_for(seed, profile.deployment, start.isoformat(), end.isoformat()))
    t0, t1 = start.timestamp(), end.timestamp()
    t = np.arange(t0, t1 + step_s / 2, step_s)  # includes a sample at the end boundary
    load = load_curve(t, profile.peak_load, rng)
    gpu_power = []
    for _ in range(profile.gpus):
        noise = rng.normal(1.0, 0.015, t.size)
        gpu_power.append(np.clip((IDLE_W + (TDP_W - IDLE_W) * load**0.6) * noise, 40.0, 720.0))
    # Full-load throughput from J/token; at lower load the same power buys fewer tokens.
    max_rate = profile.gpus * TDP_W / profile.joules_per_token_at_full_load
    rate = max_rate * load**1.4
    per_step = rng.poisson(np.maximum(rate * step_s, 0.0)).astype(np.float64)
    output = np.concatenate([[0.0], np.cumsum(per_step[1:])]) + 1e6
    prompt = np.concatenate([[0.0], np.cumsum(rng.poisson(per_step[1:] * profile.input_output_ratio))]) + 3e6
    # One engine restart mid-period: counters reset (Prometheus semantics).
    reset_at = t.size // 3
    output[reset_at:] -= output[reset_at] - per_step[reset_at]
    prompt[reset_at:] -= prompt[reset_at] - rng.poisson(per_step[reset_at] * profile.input_output_ratio)

    site = SITES[profile.site]
    ext = "parquet" if file_format == "parquet" else "csv"
    devices = [f"{profile.deployment}-gpu{i}" for i in range(profile.gpus)]
    manifest: dict = {
        "format": "greencert-bundle/1",
        "scope": {
            "site": profile.site,
            "deployment": profile.deployment,
            "model": profile.model,
            "hardware": f"{profile.gpus}x NVIDIA H100 80GB HBM3",
            "active_params_billions": profile.active_params_billions,
            "gpu_type": "NVIDIA H100 80GB HBM3",
            "gpu_count": profile.gpus,
            "serving_engine": profile.serving_engine,
            "engine_version": profile.engine_version,
            "precision": profile.precision,
        },
        "period": {"start": stamp(start), "end": stamp(end)},
        "power": {
            "file": f"power.{ext}",
            "kind": "gauge",
            "unit": "W",
            "devices": devices,
            "meter_class": "gpu_sensor",
        },
        "tokens": {"file": f"tokens.{ext}"},
        "facility": {"pue": site["pue"], "pue_category": 1, **_water(site)},
        "provenance": {"source": "greencert simulate", "seed": seed, "step_seconds": step_s},
    }
    tables = {
        f"power.{ext}": {
            "timestamp": np.tile(t, profile.gpus),
            "device": np.repeat(np.array(devices), t.size),
            "value": np.round(np.concatenate(gpu_power), 3),
        },
        f"tokens.{ext}": {"timestamp": t, "output_tokens": output, "input_tokens": prompt},
    }
    if site["grid"] == "hourly":
        hours = np.arange(np.floor(t0 / 3600) * 3600, t1, 3600.0)
        hod = (hours % 86400) / 3600
        intensity = site["base"] - site["swing"] * np.clip(np.sin((hod - 6) / 12 * np.pi), 0, None)
        intensity = np.round(intensity + rng.normal(0, 10, hours.size), 1)
        manifest["grid"] = {
            "file": f"grid.{ext}",
            "unit": "gCO2e/kWh",
            "source": "simulated hourly location-based",
        }
        tables[f"grid.{ext}"] = {"timestamp": hours, "intensity": intensity}
    else:
        manifest["grid"] = {
            "annual": site["annual"],
            "unit": "gCO2e/kWh",
            "source": site["source"],
            "year": 2023,
        }
    _extra_layers(profile, manifest, tables, t, load, gpu_power, devices, ext, rng)
    _requests(profile, manifest, tables, t, per_step, reset_at, ext, rng)
    return write_bundle(target, manifest, tables)


def _requests(
    profile: DeploymentProfile,
    manifest: dict,
    tables: dict,
    t: np.ndarray,
    per_step: np.ndarray,
    reset_at: int,
    ext: str,
    rng: np.random.Generator,
) -> None:
    """vLLM's vllm:request_success_total, reset with the token counters at the engine restart.

    Drawn last, so every other file keeps the bytes it had before request counters existed.
    """
    done = rng.poisson(per_step[1:] / profile.output_tokens_per_request).astype(np.float64)
    count = np.concatenate([[0.0], np.cumsum(done)]) + 4000.0
    count[reset_at:] -= count[reset_at] - done[reset_at - 1]
    manifest["requests"] = {"file": f"requests.{ext}", "metric": "vllm:request_success_total"}
    tables[f"requests.{ext}"] = {"timestamp": t, "requests": count}


# Host power per GPU slot (CPUs, memory, NICs, fans): a fixed part plus a part that follows the GPUs.
HOST_W_PER_GPU = 110.0
HOST_SHARE_OF_GPU = 0.12


def _extra_layers(
    profile: DeploymentProfile,
    manifest: dict,
    tables: dict,
    t: np.ndarray,
    load: np.ndarray,
    gpu_power: list[np.ndarray],
    devices: list[str],
    ext: str,
    rng: np.random.Generator,
) -> None:
    """Meter layers and the concurrency gauge; drawn after everything else so the other files keep their bytes."""
    # vLLM's num_requests_running: requests in flight follow the load, with Poisson scatter.
    running = rng.poisson(profile.max_concurrency * load**0.8).astype(np.float64)
    manifest["concurrency"] = {"file": f"concurrency.{ext}", "metric": "vllm:num_requests_running"}
    tables[f"concurrency.{ext}"] = {"timestamp": t, "value": running}
    if profile.gpu_energy_counter:
        # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ since boot): the same sensor integrated on the
        # GPU, so it tracks the power gauge to well within a percent.
        counters = []
        for p in gpu_power:
            joules = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t))])
            counters.append(np.round((rng.uniform(1e9, 5e9) + joules * rng.normal(1.0, 0.003)) * 1e3))
        manifest["meters"] = [
            *manifest.get("meters", []),
            {
                "name": "gpu-energy",
                "layer": "gpu",
                "file": f"gpu_energy.{ext}",
                "kind": "counter",
                "unit": "mJ",
                "meter_class": "gpu_sensor",
                "crosscheck": True,
            },
        ]
        tables[f"gpu_energy.{ext}"] = {
            "timestamp": np.tile(t, len(gpu_power)),
            "device": np.repeat(np.array(devices), t.size),
            "value": np.concatenate(counters),
        }
    if profile.node_meter or profile.pdu_meter:
        gpus = np.sum(gpu_power, axis=0)
        node = gpus + profile.gpus * HOST_W_PER_GPU + HOST_SHARE_OF_GPU * gpus
        node_reading = np.round(node * rng.normal(1.0, 0.01, t.size), 1)
        if profile.node_meter:
            manifest["meters"] = [
                *manifest.get("meters", []),
                {
                    "name": "node-power",
                    "layer": "node",
                    "file": f"node_power.{ext}",
                    "kind": "gauge",
                    "unit": "W",
                    "meter_class": "node_meter",
                },
            ]
            tables[f"node_power.{ext}"] = {
                "timestamp": t,
                "device": np.full(t.size, f"{profile.deployment}-node0"),
                "value": node_reading,
            }
        if profile.pdu_meter:
            # The rack PDU outlet also feeds the node's share of a top-of-rack switch.
            pdu = np.round(node + 45.0 + rng.normal(0.0, 2.0, t.size), 1)
            manifest["meters"] = [
                *manifest.get("meters", []),
                {
                    "name": "rack-pdu",
                    "layer": "pdu",
                    "file": f"rack_pdu.{ext}",
                    "kind": "gauge",
                    "unit": "W",
                    "meter_class": "pdu",
                },
            ]
            tables[f"rack_pdu.{ext}"] = {"timestamp": t, "value": pdu}


def profile_by_name(name: str) -> DeploymentProfile:
    for p in SAMPLE_FLEET:
        if p.deployment == name:
            return p
    raise KeyError(
        f"no simulated deployment {name!r}; known: {', '.join(p.deployment for p in SAMPLE_FLEET)}"
    )

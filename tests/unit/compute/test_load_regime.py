"""Load-regime disclosure: idle share and energy, concurrency statistics, software and hardware."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.compute.load_regime import concurrency_stats
from greencert.errors import BundleError
from integrity_bundles import START, assess_bundle, build, times

J_PER_KWH = 3.6e6


def test_idle_share_and_idle_energy(tmp_path: Path) -> None:
    # 100 W and no tokens for the first 15 minutes, then 500 W and 1 M tokens over 45 minutes.
    bundle = build(
        tmp_path / "b",
        power=lambda t: np.where(t <= 900, 100.0, 500.0),
        tokens=lambda t: np.maximum(t - 900.0, 0.0) / 2700.0 * 1e6,
        power_spec={"meter_class": "node_meter"},
        scope={"serving_engine": "vllm", "engine_version": "0.11.1", "precision": "bf16", "gpu_type": "H100"},
        # Every provisioned device is metered: facility energy is the metered energy x PUE (no idle
        # provisioned capacity estimate), so idle time is the only idle here.
        manifest_extra={"idle_capacity": {"basis": "metered"}},
    )
    fig, a = assess_bundle(bundle, with_budget=False)
    regime = a.sections["load_regime"]
    idle = regime["idle"]
    assert idle["share_of_period"] == pytest.approx(0.25)
    # Trapezoid energy: 100 W x 900 s idle; busy 500 W x 2700 s less the ramp 900-915 s (mean 300 W).
    idle_j = 100.0 * 900
    busy_j = 500.0 * 2700 - (500.0 - 100.0) * 15 / 2
    assert idle["share_of_energy"] == pytest.approx(idle_j / (idle_j + busy_j), abs=5e-5)
    assert idle["mean_power_of_series_w"] == pytest.approx(100.0)
    assert idle["energy"]["value"] == pytest.approx(idle_j / J_PER_KWH * 1.2, rel=1e-5)
    assert regime["tokens"]["output"] == pytest.approx(1e6)
    assert regime["tokens"]["input_per_output"] == pytest.approx(3.0)
    assert regime["software"] == {
        "serving_engine": "vllm",
        "engine_version": "0.11.1",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "precision": "bf16",
    }
    assert regime["hardware"]["gpu_type"] == "H100"
    assert regime["hardware"]["gpu_count"] == 1 and regime["hardware"]["gpu_count_basis"] == "metered devices"
    assert regime["concurrency"]["available"] is False
    excluding = regime["energy_per_million_tokens_excluding_idle"]["value"]
    assert excluding == pytest.approx(busy_j / J_PER_KWH * 1.2, rel=1e-5)


def _concurrency_bundle(tmp_path: Path, values_b: np.ndarray) -> Path:
    t = times()
    table = {
        "timestamp": np.concatenate([t, t]),
        "instance": np.repeat(np.array(["a", "b"]), t.size),
        "value": np.concatenate([np.full(t.size, 3.0), values_b]),
    }
    return build(
        tmp_path / "b",
        manifest_extra={"concurrency": {"file": "running.csv", "metric": "vllm:num_requests_running"}},
        extra_tables={"running.csv": table},
    )


def test_concurrency_is_time_weighted_over_instances(tmp_path: Path) -> None:
    t = times()
    cycle = (np.arange(t.size) % 10).astype(float)  # 0..9, each held for one 15 s step
    _, a = assess_bundle(_concurrency_bundle(tmp_path, cycle), with_budget=False)
    c = a.sections["load_regime"]["concurrency"]
    # Each reading holds until the next: the period is covered by readings 0..239 (the one at the
    # end holds for no time). Instance a adds a constant 3.
    held = 3.0 + cycle[:-1]
    assert c["mean"] == pytest.approx(held.mean())
    assert [c["p50"], c["p90"], c["p99"]] == pytest.approx(list(np.percentile(held, [50, 90, 99])))
    assert c["max"] == 12.0
    assert c["instances"] == 2 and c["coverage"] == 1.0
    assert c["metric"] == "vllm:num_requests_running" and c["source"] == "running.csv"


def test_negative_concurrency_names_the_row(tmp_path: Path) -> None:
    t = times()
    values = np.ones(t.size)
    values[7] = -1.0
    b = open_bundle(_concurrency_bundle(tmp_path, values))
    with pytest.raises(BundleError) as err:
        concurrency_stats(b.concurrency, START, START + 3600.0, 120.0)
    assert "negative" in err.value.problem
    # Instance b's rows follow instance a's 241 rows in the file: data row 241 + 7, CSV line + 2.
    assert err.value.where == f"running.csv line {241 + 7 + 2}"

"""Extract stage and DAG against a real Prometheus server (Debian's prometheus + promtool).

The data are generated here with known, analytic figures, backfilled with promtool, and pulled
back through the extract stage. Expected figures come from the generating formulas (and, for the
exact sample sets, from a small reference of Prometheus' range-query semantics written below), never
from GreenCert's output.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from prometheus_server import PrometheusServer, Sample, create_blocks, write_openmetrics

from airflow_harness import airflow_env, migrate, run_airflow
from greencert.config import load_config
from greencert.errors import ConfigError, SourceError
from greencert.sources.extract import extract_stage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DAY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY_END = DAY + dt.timedelta(days=1)
T0 = DAY.timestamp()
T1 = DAY_END.timestamp()
HOUR = (dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, 2, tzinfo=dt.UTC))
H0, H1 = HOUR[0].timestamp(), HOUR[1].timestamp()
LOOKBACK = 300.0  # Prometheus' default lookback delta
SECRET = "gc-test-secret-7d1f2a"
MAX_GAP = 120.0  # greencert-2026.1 data_quality.max_gap
# Analytic figures below are GPU energy x declared PUE: the 2026.1 scheme takes the IT energy as
# metered (later schemes add an estimate for unmetered node parts, a policy tested elsewhere).
SCHEME = REPO / "plugins" / "greencert" / "schemes" / "greencert-2026.1.yaml"

# --- cluster "main": one day, two GPUs every 5 s, vLLM counters every 15 s off the step grid ---------
GPU_STEP = 5.0
NOON = T0 + 43200
GPU_B_RESET = T0 + 64800  # DCGM energy counter of node-b restarts right after the 18:00:00 sample
TOK_STEP = 15.0
TOK_OFFSET = -8.0  # token scrapes at T0 - 8 + 15k: never on the 5 s query grid... except by chance
ENGINE_RESTART = T0 + 32407  # vLLM restarts right after the 09:00:07 scrape: counters from zero
OUT_RATE, IN_RATE = 2000.0, 6000.0  # tokens per second
PUE = 1.25
GRID = 400.0  # gCO2e/kWh


def power_a(t: np.ndarray) -> np.ndarray:
    return np.full(t.size, 300.0)


def power_b(t: np.ndarray) -> np.ndarray:
    return np.where(t < NOON, 200.0, 650.0)


def energy_a_mj(t: np.ndarray) -> np.ndarray:
    return 4.2e12 + 300.0e3 * (t - (T0 - 600))


def energy_b_mj(t: np.ndarray) -> np.ndarray:
    joules = 200.0 * (np.minimum(t, NOON) - (T0 - 600)) + 650.0 * np.maximum(t - NOON, 0.0)
    before_reset = 7.7e11 + 1e3 * joules
    after_reset = 1e3 * 650.0 * (t - GPU_B_RESET)
    return np.where(t > GPU_B_RESET, after_reset, before_reset)


def vllm_counter(t: np.ndarray, rate: float, offset: float) -> np.ndarray:
    return np.where(t > ENGINE_RESTART, rate * (t - ENGINE_RESTART), offset + rate * (t - t[0]))


# --- cluster "alt": one hour of other exporters, every 15 s on the grid -----------------------------
ALT_STEP = 15.0
SGL_OUT, SGL_IN = 500.0, 1500.0
TGI_OUT, TGI_IN = 300.0, 900.0
TGI_RESTART = H0 + 1800  # right after the 01:30:00 scrape
KEPLER_PLATFORM_W, KEPLER_PACKAGE_W, KEPLER_CORE_W = 900.0, 250.0, 180.0
FACILITY_KW, IT_KW = 1.3, 1.0


def dcgm_labels(host_label: str, host: str, gpu: str, cluster: str) -> dict[str, str]:
    return {
        "gpu": gpu,
        "UUID": f"GPU-{host}-{gpu}-5f1c",
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA H100 80GB HBM3",
        host_label: host,
        "job": "dcgm",
        "instance": f"{host}:9400",
        "cluster": cluster,
    }


def generate() -> list[Sample]:
    series: list[Sample] = []
    t_gpu = np.arange(T0 - 600, T1 + 600 + 1, GPU_STEP)
    a = dcgm_labels("Hostname", "node-a", "0", "main")  # released dcgm-exporter spelling
    b = dcgm_labels("hostname", "node-b", "1", "main")  # newer spelling
    series += [
        Sample("DCGM_FI_DEV_POWER_USAGE", a, t_gpu, power_a(t_gpu)),
        Sample("DCGM_FI_DEV_POWER_USAGE", b, t_gpu, power_b(t_gpu)),
        Sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", a, t_gpu, energy_a_mj(t_gpu), "unknown"),
        Sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", b, t_gpu, energy_b_mj(t_gpu), "unknown"),
    ]
    t_tok = np.arange(T0 + TOK_OFFSET - 600, T1 + 600, TOK_STEP)
    vl = {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0", "job": "vllm"}
    vl |= {"instance": "vllm-0:8000", "cluster": "main"}
    series += [
        Sample("vllm:generation_tokens_total", vl, t_tok, vllm_counter(t_tok, OUT_RATE, 1.2e9), "counter"),
        Sample("vllm:prompt_tokens_total", vl, t_tok, vllm_counter(t_tok, IN_RATE, 3.4e9), "counter"),
    ]
    t_alt = np.arange(H0 - 600, H1 + 600 + 1, ALT_STEP)
    c = dcgm_labels("Hostname", "node-c", "0", "alt")
    series += [
        Sample("DCGM_FI_DEV_POWER_USAGE", c, t_alt, np.full(t_alt.size, 400.0)),
        Sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", c, t_alt, 1e9 + 400e3 * (t_alt - t_alt[0]), "unknown"),
    ]
    sg = {"model_name": "Qwen/Qwen3-14B", "job": "sglang", "instance": "sgl-0:30000", "cluster": "alt"}
    series += [
        Sample("sglang:generation_tokens_total", sg, t_alt, 7e6 + SGL_OUT * (t_alt - t_alt[0]), "counter"),
        Sample("sglang:prompt_tokens_total", sg, t_alt, 9e6 + SGL_IN * (t_alt - t_alt[0]), "counter"),
    ]
    tg = {"job": "tgi", "instance": "tgi-0:80", "cluster": "alt"}

    def tgi(rate: float, offset: float) -> np.ndarray:
        return np.where(t_alt > TGI_RESTART, rate * (t_alt - TGI_RESTART), offset + rate * (t_alt - t_alt[0]))

    series += [
        Sample("tgi_request_generated_tokens_sum", tg, t_alt, tgi(TGI_OUT, 5e5), "unknown"),
        Sample("tgi_request_input_length_sum", tg, t_alt, tgi(TGI_IN, 8e5), "unknown"),
    ]
    kp = {"node_name": "node-c", "job": "kepler", "instance": "node-c:28282", "cluster": "alt"}
    series += [
        Sample(
            "kepler_platform_watts", kp | {"source": "redfish"}, t_alt, np.full(t_alt.size, KEPLER_PLATFORM_W)
        ),
        Sample(
            "kepler_node_cpu_joules_total",
            kp | {"zone": "package"},
            t_alt,
            KEPLER_PACKAGE_W * (t_alt - t_alt[0]),
            "counter",
        ),
        # Inside the package zone: must never be pulled (nor summed with it).
        Sample(
            "kepler_node_cpu_joules_total",
            kp | {"zone": "core"},
            t_alt,
            KEPLER_CORE_W * (t_alt - t_alt[0]),
            "counter",
        ),
    ]
    site = {"job": "bms", "instance": "bms-1", "cluster": "alt"}
    series += [
        Sample("site_facility_power_kw", site, t_alt, np.full(t_alt.size, FACILITY_KW)),
        Sample("site_it_energy_kwh_total", site, t_alt, 5e4 + IT_KW * (t_alt - t_alt[0]) / 3600, "counter"),
    ]
    return series


# --- Prometheus range-query semantics, independently: which raw samples a pull must return ------------
def expected_samples(
    t: np.ndarray, start: float, end: float, step: float, keep_from: float, after: float = MAX_GAP
) -> np.ndarray:
    """Indices of the samples a pull must return: those that range queries at ..., end - step, end,
    end + step, ... (first <= start, last >= end + after) can see, from keep_from to the period end,
    plus the first sample after the end (within ``after``) when none lies on the end itself."""
    n_after = int(np.ceil(after / step))
    n = int(np.ceil((end - start) / step)) + 1
    evals = end - step * np.arange(-n_after, n)[::-1]
    latest = np.searchsorted(t, evals, side="right") - 1  # the last sample at or before each step
    ok = latest >= 0
    ok[ok] &= t[latest[ok]] >= evals[ok] - LOOKBACK  # ... if it is within the lookback window
    idx = np.unique(latest[ok])
    inside = idx[(t[idx] >= keep_from) & (t[idx] <= end)]
    later = idx[(t[idx] > end) & (t[idx] <= end + after)]
    if later.size and not (inside.size and t[inside[-1]] == end):
        inside = np.append(inside, later[0])
    return inside


@pytest.fixture(scope="session")
def prom_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Sample], Path]:
    root = tmp_path_factory.mktemp("prometheus-data")
    series = generate()
    blocks = create_blocks(write_openmetrics(series, root / "backfill.om"), root / "blocks")
    return series, blocks


@pytest.fixture(scope="session")
def prom(prom_data, tmp_path_factory) -> PrometheusServer:
    server = PrometheusServer(prom_data[1], tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture
def connection(prom: PrometheusServer, monkeypatch: pytest.MonkeyPatch) -> PrometheusServer:
    # Prometheus ignores the header; it is there to prove it never reaches a bundle or an error.
    env = prom.connection_env(retries=1, backoff=0.05, headers={"Authorization": f"Bearer {SECRET}"})
    monkeypatch.setenv("AIRFLOW_CONN_GREENCERT_PROMETHEUS", env)
    return prom


def scope(**extra: object) -> dict[str, object]:
    return {
        "site": "dc-test-1",
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "hardware": "2x NVIDIA H100 80GB HBM3",
        "active_params_billions": 8,
        "serving_engine": "vllm",
        **extra,
    }


def main_source(**overrides: object) -> dict[str, object]:
    source: dict[str, object] = {
        "kind": "prometheus",
        "profile": ["dcgm", "vllm"],
        "labels": {"cluster": "main"},
        "step_seconds": GPU_STEP,
        "manifest": {
            "scope": scope(gpu_count=2),
            "facility": {"pue": PUE},
            "grid": {"annual": GRID, "unit": "gCO2e/kWh", "source": "test factor"},
        },
    }
    source.update(overrides)
    return source


def write_config(
    folder: Path, deployments: dict[str, dict], profiles: dict | None = None, scheme: Path | None = SCHEME
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, object] = {
        "registry": "registry",
        "work_dir": "work",
        "deployments": [{"deployment": name, "source": src} for name, src in deployments.items()],
    }
    if scheme is not None:
        data["scheme"] = str(scheme)
    if profiles:
        data["source_profiles"] = profiles
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read(bundle: Path, name: str) -> dict[str, np.ndarray]:
    table = pq.read_table(bundle / name)
    out = {}
    for col in table.column_names:
        arr = table.column(col)
        if col == "timestamp":
            out[col] = arr.cast("int64").to_numpy() / 1e6  # microseconds -> seconds
        else:
            out[col] = np.asarray(arr.to_pylist()) if col in ("device", "instance") else arr.to_numpy()
    return out


def certify_bundle(bundle: Path, out: Path, scheme: Path | None = SCHEME) -> dict:
    from greencert.pipeline import certify

    return json.loads(Path(certify(bundle, out, scheme, work_dir=out / "work")).read_text())


def prometheus_version() -> str:
    text = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, check=True)
    return (text.stdout + text.stderr).split()[2]  # "prometheus, version X (...)"


# --- the long window: two GPUs, constant and step power, token counter with a reset -------------------
def main_expectations() -> dict[str, float]:
    # node-a: 300 W all day. node-b: 200 W then 650 W from the 12:00:00 sample; the trapezoid over
    # the 5 s samples ramps across the one segment 11:59:55-12:00:00.
    joules = 300.0 * 86400 + 200.0 * (43200 - GPU_STEP) + 0.5 * (200 + 650) * GPU_STEP + 650.0 * 43200
    it_kwh = joules / 3.6e6
    # Tokens: counters linear in time, interpolated at both edges between the scrapes around them
    # (T0 - 8 / T0 + 7, T1 - 8 / T1 + 7): exactly the rate times the day. The restart follows a
    # scrape, so no token is lost.
    out_tokens = OUT_RATE * (T1 - T0)
    in_tokens = IN_RATE * (T1 - T0)
    facility = it_kwh * PUE
    return {
        "it_energy": it_kwh,
        "facility_energy": facility,
        "output_tokens": out_tokens,
        "input_tokens": in_tokens,
        "energy_per_million_tokens": facility / (out_tokens / 1e6),
        "carbon_per_million_tokens": facility * GRID / (out_tokens / 1e6),
        "operational_carbon": facility * GRID,
    }


def test_long_window_two_gpus_and_token_reset(connection, prom_data, tmp_path):
    series, _ = prom_data
    config = write_config(tmp_path, {"chat-8b": main_source()})
    bundle = Path(extract_stage(config, "chat-8b", DAY, DAY_END))

    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    assert SECRET not in (bundle / "manifest.yaml").read_text()
    prov = manifest["provenance"]
    assert (T1 - T0) / GPU_STEP + 1 > 11_000  # the window really needs chunking
    assert prov["chunks"] == 2
    assert prov["prometheus_version"] == prometheus_version()
    assert {q["query"] for q in prov["queries"]} == {
        'DCGM_FI_DEV_POWER_USAGE{cluster="main"}',
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{cluster="main"}',
        'vllm:generation_tokens_total{cluster="main"}',
        'vllm:prompt_tokens_total{cluster="main"}',
        'vllm:request_success_total{cluster="main"}',  # optional request counter
    }
    assert manifest["meters"][0] | {"file": None} == {
        "name": "gpu_energy_counter",
        "layer": "gpu",
        "file": None,
        "kind": "counter",
        "unit": "mJ",
        "meter_class": "gpu_sensor",
        "crosscheck": True,
    }

    # Every raw sample of the period exactly once (none lost or doubled at the chunk edge).
    power = read(bundle, "power.parquet")
    by_name = {(s.metric, s.labels.get("Hostname") or s.labels.get("hostname")): s for s in series}
    for device, host in (("node-a:gpu0", "node-a"), ("node-b:gpu1", "node-b")):
        src = by_name[("DCGM_FI_DEV_POWER_USAGE", host)]
        idx = expected_samples(src.t, T0, T1, GPU_STEP, T0 - MAX_GAP)
        mine = power["device"] == device
        np.testing.assert_array_equal(power["timestamp"][mine], src.t[idx])
        np.testing.assert_array_equal(power["value"][mine], src.v[idx])
        assert src.t[idx][0] == T0 and src.t[idx][-1] == T1
        energy = read(bundle, "gpu_energy_counter.parquet")
        cnt = by_name[("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", host)]
        np.testing.assert_array_equal(energy["value"][energy["device"] == device], cnt.v[idx])
    tokens = read(bundle, "tokens.parquet")
    out = by_name[("vllm:generation_tokens_total", None)]
    idx = expected_samples(out.t, T0, T1, GPU_STEP, T0 - MAX_GAP)
    assert out.t[idx][0] == T0 + TOK_OFFSET  # the scrape just before the period start is kept
    np.testing.assert_array_equal(tokens["timestamp"], out.t[idx])
    np.testing.assert_array_equal(tokens["output_tokens"], out.v[idx])
    assert (np.diff(tokens["output_tokens"]) < 0).sum() == 1  # the reset is in the bundle

    cert = certify_bundle(bundle, tmp_path / "registry")
    for name, value in main_expectations().items():
        assert cert["metrics"][name]["value"] == pytest.approx(value, rel=1e-9), name
    assert cert["data_quality"]["coverage"] == pytest.approx(1.0, abs=1e-12)
    # DCGM's counter (with its own reset) agrees with the integrated power: no finding.
    (check,) = cert["data_quality"]["crosschecks"]
    assert check["passed"] and check["devices_compared"] == 2
    # node-b differs by the trapezoid's half-segment at the power step: 1125 J of the day.
    b_joules = 200.0 * 43195 + 425.0 * 5 + 650.0 * 43200
    assert check["max_abs_relative_difference"] == pytest.approx(1125.0 / b_joules, rel=1e-6)
    assert not [f for f in cert.get("findings", []) if f["finding"] == "energy_crosscheck_mismatch"]


def test_rerun_is_idempotent(connection, tmp_path):
    config = write_config(tmp_path, {"chat-8b": main_source(step_seconds=15.0)})
    first = Path(extract_stage(config, "chat-8b", HOUR[0], HOUR[1]))
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    second = Path(extract_stage(config, "chat-8b", HOUR[0], HOUR[1]))
    assert second == first
    assert {p.name: p.read_bytes() for p in second.iterdir()} == before
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]  # no staging leftovers


# --- other exporters --------------------------------------------------------------------------------
def alt_source(profile: list[str], **manifest: object) -> dict[str, object]:
    return {
        "kind": "prometheus",
        "profile": profile,
        "labels": {"cluster": "alt"},
        "step_seconds": ALT_STEP,
        "manifest": {
            "scope": scope(hardware="1x NVIDIA H100 80GB HBM3"),
            "facility": {"pue": PUE},
            "grid": {"annual": GRID, "unit": "gCO2e/kWh"},
            **manifest,
        },
    }


@pytest.mark.parametrize(
    ("engine", "out_tokens", "in_tokens"),
    [("sglang", SGL_OUT * 3600, SGL_IN * 3600), ("tgi", TGI_OUT * 3600, TGI_IN * 3600)],
)
def test_token_profiles(connection, tmp_path, engine, out_tokens, in_tokens):
    src = alt_source(["dcgm", engine])
    src["series_labels"] = {"tokens": {"job": engine}, "gpu_energy_counter": {"job": "dcgm"}}
    config = write_config(tmp_path, {"alt": src})
    bundle = Path(extract_stage(config, "alt", *HOUR))
    queries = yaml.safe_load((bundle / "manifest.yaml").read_text())["provenance"]["queries"]
    assert [q["query"] for q in queries] == [
        'DCGM_FI_DEV_POWER_USAGE{cluster="alt"}',
        f'{engine}:generation_tokens_total{{cluster="alt", job="{engine}"}}'
        if engine == "sglang"
        else 'tgi_request_generated_tokens_sum{cluster="alt", job="tgi"}',
        f'{engine}:prompt_tokens_total{{cluster="alt", job="{engine}"}}'
        if engine == "sglang"
        else 'tgi_request_input_length_sum{cluster="alt", job="tgi"}',
        # The optional request counter (figures per 1,000 queries) is asked for; absent here.
        'sglang:num_requests_total{cluster="alt"}' if engine == "sglang" else 'tgi_request_success{cluster="alt"}',
        'DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{cluster="alt", job="dcgm"}',
    ]
    cert = certify_bundle(bundle, tmp_path / "registry")
    it_kwh = 400.0 * 3600 / 3.6e6
    assert cert["metrics"]["it_energy"]["value"] == pytest.approx(it_kwh, rel=1e-12)
    assert cert["metrics"]["output_tokens"]["value"] == pytest.approx(out_tokens, rel=1e-12)
    assert cert["metrics"]["input_tokens"]["value"] == pytest.approx(in_tokens, rel=1e-12)
    assert cert["metrics"]["energy_per_million_tokens"]["value"] == pytest.approx(
        it_kwh * PUE / (out_tokens / 1e6), rel=1e-12
    )


def test_kepler_and_user_profile_for_facility_meters(connection, tmp_path):
    # A site's building meters through a user-defined profile: no code change needed.
    site = {
        "description": "building management system",
        "facility": {
            "meter": {
                "metric": "site_facility_power_kw",
                "kind": "gauge",
                "unit": "kW",
                "meter_class": "revenue_meter",
            },
            "it_meter": {"metric": "site_it_energy_kwh_total", "kind": "counter", "unit": "kWh"},
        },
    }
    src = alt_source(["kepler", "tgi", "site"], facility={"pue_category": 2})
    config = write_config(tmp_path, {"alt": src}, {"site": site})
    bundle = Path(extract_stage(config, "alt", *HOUR))
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    assert manifest["facility"]["meter"]["unit"] == "kW"
    package = read(bundle, "cpu_package_energy.parquet")
    assert set(package["device"]) == {
        "cluster=alt,instance=node-c:28282,job=kepler,node_name=node-c,zone=package"
    }  # the core zone (inside the package) is not pulled
    # No GPU series for Kepler here: that optional layer is left out and recorded as absent.
    assert [m["name"] for m in manifest["meters"]] == ["cpu_package_energy"]
    (gpu_query,) = [q for q in manifest["provenance"]["queries"] if q["role"] == "gpu_energy"]
    assert gpu_query["absent"] is True and gpu_query["series"] == 0
    cert = certify_bundle(bundle, tmp_path / "registry")
    it_kwh = KEPLER_PLATFORM_W * 3600 / 3.6e6
    assert cert["methodology"]["pue_basis"] == "measured"
    assert cert["methodology"]["pue"] == pytest.approx(FACILITY_KW / IT_KW, rel=1e-9)
    assert cert["metrics"]["facility_energy"]["value"] == pytest.approx(
        it_kwh * FACILITY_KW / IT_KW, rel=1e-9
    )
    assert cert["metrics"]["output_tokens"]["value"] == pytest.approx(TGI_OUT * 3600, rel=1e-12)


# --- faults: each ends with a clear error and no bundle ---------------------------------------------
def assert_no_bundle(config: Path, deployment: str) -> None:
    folder = load_config(config).work_path / "bundles" / deployment
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def test_missing_series_is_a_clear_error(connection, tmp_path):
    config = write_config(tmp_path, {"no-tokens": main_source(profile=["dcgm", "sglang"])})
    with pytest.raises(SourceError) as err:
        extract_stage(config, "no-tokens", *HOUR)
    message = str(err.value)
    assert 'query sglang:generation_tokens_total{cluster="main"}' in message
    assert "no samples between 2026-01-01T01:00:00" in message
    assert_no_bundle(config, "no-tokens")


def test_missing_gpu_series_is_a_clear_error(connection, tmp_path):
    src = main_source()
    src["manifest"]["scope"]["gpu_count"] = 3
    config = write_config(tmp_path, {"three-gpus": src})
    with pytest.raises(SourceError, match=r"gpu_count is 3 but the power query returned 2 GPU series"):
        extract_stage(config, "three-gpus", *HOUR)
    assert_no_bundle(config, "three-gpus")


def test_bad_query_names_query_and_server_error(connection, tmp_path):
    broken = {
        "power": {"metric": "DCGM_FI_DEV_POWER_USAGE", "matchers": 'gpu=~"("', "kind": "gauge", "unit": "W"}
    }
    config = write_config(tmp_path, {"bad": main_source(profile=["broken", "vllm"])}, {"broken": broken})
    started = time.monotonic()
    with pytest.raises(SourceError) as err:
        extract_stage(config, "bad", *HOUR)
    message = str(err.value)
    assert """query 'DCGM_FI_DEV_POWER_USAGE{gpu=~"(", cluster="main"}'""" in message
    assert "HTTP 400: bad_data:" in message and "parse error" in message and "missing closing )" in message
    assert SECRET not in message
    assert time.monotonic() - started < 5  # a 4xx is not retried
    assert_no_bundle(config, "bad")


def test_unknown_connection_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_PROMETHEUS", raising=False)
    config = write_config(tmp_path, {"x": main_source(conn_id="no_such_prometheus")})
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_NO_SUCH_PROMETHEUS"):
        extract_stage(config, "x", *HOUR)


def test_server_stopped_mid_pull(prom_data, tmp_path, monkeypatch):
    from greencert.sources.prometheus import extract_prometheus
    from greencert.sources.prometheus_hook import PrometheusHook

    server = PrometheusServer(prom_data[1], tmp_path / "server")
    try:
        monkeypatch.setenv("AIRFLOW_CONN_PROM_DOOMED", server.connection_env(retries=2, backoff=0.05))
        config = write_config(tmp_path / "cfg", {"chat-8b": main_source(conn_id="prom_doomed")})
        cfg = load_config(config)
        answered = []

        def stop_after_third(resp, *args, **kwargs):
            # Build info, then the first chunk's value and timestamp answers; then the server is gone.
            answered.append(resp.url)
            if len(answered) == 3:
                server.stop()

        session = requests.Session()
        session.hooks["response"].append(stop_after_third)
        target = cfg.work_path / "bundles" / "chat-8b" / "day"
        with pytest.raises(SourceError) as err:
            extract_prometheus(
                cfg, cfg.deployment("chat-8b"), DAY, DAY_END, target, PrometheusHook("prom_doomed", session)
            )
    finally:
        server.stop()
    message = str(err.value)
    # The server stops while the third answer (the first chunk's sample times) is being read: that
    # answer is cut off, or, when its body was already in, the next query (the second chunk's values)
    # is refused. Either way the error names the query and its window.
    assert re.search(
        r"query '(timestamp\(DCGM_FI_DEV_POWER_USAGE\{cluster=\"main\"\}\)' over \[2026-01-01T00:00:00Z,"
        r"|DCGM_FI_DEV_POWER_USAGE\{cluster=\"main\"\}' over \[2026-01-01T\d\d:\d\d:\d\dZ,)",
        message,
    ), message
    assert "failed after 3 attempt(s): ConnectionError" in message
    assert f"Prometheus http://127.0.0.1:{server.port}" in message
    assert not target.parent.exists() or not any(target.parent.iterdir())


class FlakyProxy:
    """A reverse proxy on 127.0.0.1 in front of the real server: fails or stalls chosen requests."""

    def __init__(self, upstream: str, plan: dict[int, str]) -> None:
        self.upstream, self.plan, self.count = upstream, plan, 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                proxy.count += 1
                action = proxy.plan.get(proxy.count, "forward")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if action == "503":
                    payload = json.dumps(
                        {"status": "error", "errorType": "unavailable", "error": "overloaded"}
                    )
                    status = 503
                else:
                    if action == "stall":
                        time.sleep(1.0)  # beyond the client's 0.3 s timeout
                    up = requests.request(
                        self.command,
                        proxy.upstream + self.path,
                        data=body,
                        headers={"Content-Type": self.headers.get("Content-Type", "")},
                        timeout=30,
                    )
                    payload, status = up.text, up.status_code
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_retries_on_5xx_and_timeouts(connection, tmp_path, monkeypatch):
    config = write_config(tmp_path, {"chat-8b": main_source(conn_id="prom_flaky", step_seconds=15.0)})
    direct = write_config(tmp_path / "direct", {"chat-8b": main_source(step_seconds=15.0)})
    reference = Path(extract_stage(direct, "chat-8b", *HOUR))
    # Request 1 is build info; 2 fails with 503, 4 stalls past the timeout: both are retried.
    proxy = FlakyProxy(connection.url, {2: "503", 4: "stall"})
    try:
        conn = {"conn_type": "http", "host": f"http://127.0.0.1:{proxy.port}"}
        conn["extra"] = {"retries": 2, "backoff": 0.05, "timeout": 0.3}
        monkeypatch.setenv("AIRFLOW_CONN_PROM_FLAKY", json.dumps(conn))
        bundle = Path(extract_stage(config, "chat-8b", *HOUR))
        for name in ("power.parquet", "tokens.parquet", "gpu_energy_counter.parquet"):
            assert (bundle / name).read_bytes() == (reference / name).read_bytes()
        # Build info + 5 selectors (power, energy counter, two token counters, the optional request
        # counter) x (values, sample times) in one chunk, + the 2 retried requests.
        assert proxy.count == 1 + 5 * 2 + 2
        # Always failing: a clear error after the retries, and no bundle.
        proxy.plan = {n: "503" for n in range(proxy.count + 1, proxy.count + 100)}
        gone = write_config(tmp_path / "gone", {"chat-8b": main_source(conn_id="prom_flaky")})
        with pytest.raises(
            SourceError, match=r"failed after 3 attempt\(s\): HTTP 503: unavailable: overloaded"
        ):
            extract_stage(gone, "chat-8b", *HOUR)
        assert_no_bundle(gone, "chat-8b")
    finally:
        proxy.close()


# --- the whole DAG against the server equals the file bundle of the same samples -----------------------
def file_bundle_of_the_same_samples(series: list[Sample], target: Path) -> Path:
    """Write, by hand, the bundle a person would make from the generated samples."""
    from greencert.bundle.writer import write_bundle

    by = {
        (s.metric, s.labels.get("Hostname") or s.labels.get("hostname"), s.labels["cluster"]): s
        for s in series
    }
    tables: dict[str, dict[str, np.ndarray]] = {}
    for file, metric in (
        ("power.parquet", "DCGM_FI_DEV_POWER_USAGE"),
        ("gpu_energy_counter.parquet", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"),
    ):
        t, d, v = [], [], []
        for device, host in (("node-a:gpu0", "node-a"), ("node-b:gpu1", "node-b")):
            s = by[(metric, host, "main")]
            idx = expected_samples(s.t, T0, T1, GPU_STEP, T0 - MAX_GAP)
            t.append(s.t[idx])
            v.append(s.v[idx])
            d.append(np.full(idx.size, device))
        tables[file] = {
            "timestamp": np.concatenate(t),
            "device": np.concatenate(d),
            "value": np.concatenate(v),
        }
    out = by[("vllm:generation_tokens_total", None, "main")]
    inp = by[("vllm:prompt_tokens_total", None, "main")]
    idx = expected_samples(out.t, T0, T1, GPU_STEP, T0 - MAX_GAP)
    instance = ",".join(f"{k}={v}" for k, v in sorted(out.labels.items()))
    tables["tokens.parquet"] = {
        "timestamp": out.t[idx],
        "instance": np.full(idx.size, instance),
        "output_tokens": out.v[idx],
        "input_tokens": inp.v[idx],
    }
    manifest = {
        "format": "greencert-bundle/1",
        "scope": {**scope(gpu_count=2), "deployment": "chat-8b"},
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"},
        "power": {"file": "power.parquet", "kind": "gauge", "unit": "W", "meter_class": "gpu_sensor"},
        "tokens": {"file": "tokens.parquet"},
        "facility": {"pue": PUE},
        "grid": {"annual": GRID, "unit": "gCO2e/kWh", "source": "test factor"},
        "meters": [
            {
                "name": "gpu_energy_counter",
                "layer": "gpu",
                "file": "gpu_energy_counter.parquet",
                "kind": "counter",
                "unit": "mJ",
                "meter_class": "gpu_sensor",
                "crosscheck": True,
            }
        ],
    }
    return write_bundle(target, manifest, tables)


def test_dag_certifies_from_prometheus_like_the_file_bundle(connection, prom_data, tmp_path):
    series, _ = prom_data
    # The default scheme, whatever it is: both certificates must come out the same under it.
    config = write_config(tmp_path / "fleet", {"chat-8b": main_source()}, scheme=None)
    env = airflow_env(
        tmp_path / "airflow",
        AIRFLOW_CONN_GREENCERT_PROMETHEUS=connection.connection_env(retries=1, backoff=0.05),
    )
    migrate(env)
    conf = json.dumps({"config_path": str(config), "deployments": ["chat-8b"]})
    run = run_airflow(["dags", "test", "green_certification", "2026-01-02", "-c", conf], env, timeout=900)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert "state=success" in log or "DagRun Finished" in log, log[-4000:]
    folder = tmp_path / "fleet" / "registry" / "dc-test-1" / "chat-8b"
    (cert_path,) = folder.glob("dc-test-1.chat-8b.20260101T0000Z-20260102T0000Z.json")
    from_dag = json.loads(cert_path.read_text())

    bundle = file_bundle_of_the_same_samples(series, tmp_path / "file-bundle")
    from_file = certify_bundle(bundle, tmp_path / "file-registry", scheme=None)
    # Same samples, same figures: everything but the input hashes (the manifests differ by their
    # provenance) and the signing key record (the DAG ran in another process).
    for cert in (from_dag, from_file):
        cert.pop("inputs")
        cert.pop("signing", None)
    assert from_dag == from_file
    expected = main_expectations()
    for name in ("output_tokens", "input_tokens"):  # independent of the scheme's energy policy
        assert from_dag["metrics"][name]["value"] == pytest.approx(expected[name], rel=1e-12), name
    assert from_dag["data_quality"]["crosschecks"][0]["passed"] is True

"""docs/connect-telemetry.md, step by step, against a real Prometheus (Debian's prometheus + promtool).

The guide's fleet config (docs/examples/fleet-prometheus.yaml) is loaded with the real config loader
and used as the guide says: copied to dags/config/, checked with ``greencert sources check``,
extracted, certified and verified. The Prometheus is backfilled with the label sets dcgm-exporter
(internal/pkg/rendermetrics/render_metrics.go) and vLLM (vllm/v1/metrics/loggers.py) emit, for the
node, GPUs and model the example names (read from the example, not copied); expected series, label
sets, scrape interval and token count come from the generator below.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_server import PrometheusServer, Sample, create_blocks, write_openmetrics

from greencert.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "docs" / "examples" / "fleet-prometheus.yaml"
GUIDE = REPO / "docs" / "connect-telemetry.md"
START = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(hours=3)
S0, S1 = START.timestamp(), END.timestamp()
STEP = 15.0
WATTS = (410.0, 290.0)  # the two GPUs' constant power
OUT_RATE, IN_RATE = 900.0, 2700.0  # tokens per second
WINDOW = ["--start", "2026-02-01T00:00:00Z", "--end", "2026-02-01T03:00:00Z"]


def example_source() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())["deployments"][0]["source"]


def dcgm_labels(host: str, gpu: int) -> dict[str, str]:
    return {
        "gpu": str(gpu),
        "UUID": f"GPU-5f1c{gpu}a2e-0d0c-4f6e-9b1a-6f1e2d3c4b5{gpu}",
        "pci_bus_id": f"00000000:{17 + gpu:02X}:00.0",
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA H100 80GB HBM3",
        "Hostname": host,
        "DCGM_FI_DRIVER_VERSION": "570.124.06",
        "job": "dcgm-exporter",
        "instance": f"{host}:9400",
    }


def vllm_labels(model: str) -> dict[str, str]:
    return {"model_name": model, "engine": "0", "job": "vllm", "instance": "10.0.0.7:8000"}


def series() -> tuple[list[Sample], dict]:
    src = example_source()
    host = src["series_labels"]["power"]["Hostname"]
    model = src["series_labels"]["tokens"]["model_name"]
    gpus = src["manifest"]["scope"]["gpu_count"]
    assert gpus == len(WATTS)
    t = S0 - 600 + STEP * np.arange(int((S1 - S0 + 1200) / STEP) + 1)
    out, power_sets = [], []
    for gpu, watts in zip(range(gpus), WATTS, strict=True):
        labels = dcgm_labels(host, gpu)
        power_sets.append(labels)
        out.append(Sample("DCGM_FI_DEV_POWER_USAGE", labels, t, np.full(t.size, watts)))
        # mJ since boot, consistent with the constant power (the profile cross-checks the two)
        out.append(
            Sample(
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                labels,
                t,
                5.0e11 + 1e3 * watts * (t - t[0]),
                "unknown",
            )
        )
    # another node's GPU, which the example's labels must not select
    other = dcgm_labels("gpu-node-other", 0)
    out.append(Sample("DCGM_FI_DEV_POWER_USAGE", other, t, np.full(t.size, 700.0)))
    tokens = vllm_labels(model)
    out.append(Sample("vllm:generation_tokens_total", tokens, t, OUT_RATE * (t - t[0]), "counter"))
    out.append(Sample("vllm:prompt_tokens_total", tokens, t, IN_RATE * (t - t[0]), "counter"))
    return out, {"power": power_sets, "tokens": [tokens]}


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("connect-data")
    samples, expected = series()
    blocks = create_blocks(write_openmetrics(samples, root / "backfill.om"), root / "blocks")
    server = PrometheusServer(blocks, tmp_path_factory.mktemp("connect-prometheus"))
    server.expected = expected
    yield server
    server.stop()


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A folder laid out as the checkout: the guide copies the example to dags/config/fleet.yaml."""
    (tmp_path / "dags" / "config").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "dags" / "config" / "fleet.yaml")
    (tmp_path / "home").mkdir()
    return tmp_path


def greencert(checkout: Path, prom: PrometheusServer, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GREENCERT_", "AIRFLOW_CONN_"))}
    env.update(HOME=str(checkout / "home"), AIRFLOW_CONN_GREENCERT_PROMETHEUS=prom.connection_env())
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "greencert"), *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_the_example_loads_with_the_real_config_loader_and_the_guide_points_at_it() -> None:
    cfg = load_config(EXAMPLE)
    (dep,) = cfg.deployments
    assert dep.source.kind == "prometheus" and list(dep.source.profile) == ["dcgm", "vllm"]
    assert cfg.registry_path == (REPO / "build" / "registry").resolve()
    guide = GUIDE.read_text()
    assert "docs/examples/fleet-prometheus.yaml" in guide and "greencert sources check" in guide


def test_guide_from_prometheus_to_the_first_certificate(prom: PrometheusServer, checkout: Path) -> None:
    config = "dags/config/fleet.yaml"
    # Step: check what the Prometheus has for each profile.
    check = greencert(checkout, prom, "sources", "check", config, *WINDOW)
    assert check.returncode == 0, check.stderr[-3000:]
    text = check.stdout
    assert "chat-8b  ready" in text and "profile dcgm:" in text and "profile vllm:" in text
    host = prom.expected["power"][0]["Hostname"]
    assert (
        f'power: DCGM_FI_DEV_POWER_USAGE{{Hostname="{host}"}}: 2 series, scrape interval {STEP:g} s' in text
    )
    assert "gpu-node-other" not in text
    assert "1 of 1 deployment(s) ready" in text
    as_json = greencert(checkout, prom, "sources", "check", config, *WINDOW, "--json")
    assert as_json.returncode == 0, as_json.stderr[-3000:]
    (report,) = json.loads(as_json.stdout)
    found = {
        sel["role"]: sel
        for prof in report["profiles"]
        for sel in prof["selectors"]
    }  # fmt: skip
    sort = lambda sets: sorted(sorted(s.items()) for s in sets)  # noqa: E731
    assert sort(found["power"]["series"]) == sort(prom.expected["power"])
    assert sort(found["tokens.output"]["series"]) == sort(prom.expected["tokens"])
    assert found["power"]["scrape_interval_seconds"] == STEP
    assert found["tokens.output"]["scrape_interval_seconds"] == STEP

    # Step: pull the period into an evidence bundle, certify it, verify it.
    bundle = checkout / "build" / "bundles" / "chat-8b"
    extract = greencert(checkout, prom, "extract", config, "chat-8b", *WINDOW, "--out", str(bundle))
    assert extract.returncode == 0, extract.stderr[-3000:]
    certify = greencert(checkout, prom, "certify", str(bundle), "--registry", "build/registry", "--no-pdf")
    assert certify.returncode == 0, certify.stderr[-3000:]
    cert_path = Path(certify.stdout.strip().splitlines()[-1])
    assert cert_path.is_relative_to(checkout / "build" / "registry")
    cert = json.loads(cert_path.read_bytes())
    # A fresh HOME: signed with this installation's development key; expired once 6 months after
    # the period have passed (judged against the clock here, so the test holds on any day).
    until = dt.datetime.fromisoformat(cert["valid_until"].replace("Z", "+00:00"))
    assert until == dt.datetime(2026, 8, 1, 3, tzinfo=dt.UTC)  # period end + 6 months
    if until <= dt.datetime.now(dt.UTC):
        assert "status: expired (since 2026-08-01T03:00:00Z; development key)" in certify.stdout
        assert "warning: " in certify.stderr and "expired" in certify.stderr
    else:
        assert "status: development key" in certify.stdout
    assert cert["metrics"]["output_tokens"]["value"] == pytest.approx(OUT_RATE * (S1 - S0), rel=1e-9)
    assert cert["grading"]["size_class"] == "<=20B"  # 8 B active parameters
    verify = greencert(
        checkout, prom, "verify", str(cert_path), "--allow-development-key", "--at", "2026-02-02T00:00:00Z"
    )
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert "status: development key" in verify.stdout and "recomputed figures: ok" in verify.stdout
    assert f"grade: {cert['grade']} (size class <=20B)" in verify.stdout


def test_sources_check_names_what_is_missing(prom: PrometheusServer, checkout: Path) -> None:
    """A mistyped node name: the deployment is not ready, the selector that found nothing is named."""
    path = checkout / "dags" / "config" / "fleet.yaml"
    data = yaml.safe_load(path.read_text())
    data["deployments"][0]["source"]["series_labels"]["power"] = {"Hostname": "gpu-node-typo"}
    path.write_text(yaml.safe_dump(data))
    check = greencert(checkout, prom, "sources", "check", "dags/config/fleet.yaml", *WINDOW)
    assert check.returncode == 4, (check.returncode, check.stdout[-2000:], check.stderr[-2000:])
    assert "chat-8b  NOT READY" in check.stdout
    assert 'power: DCGM_FI_DEV_POWER_USAGE{Hostname="gpu-node-typo"}: NO SERIES' in check.stdout
    assert "0 of 1 deployment(s) ready" in check.stdout
    assert "Traceback" not in check.stderr

"""Telemetry as fleets export it, against a real Prometheus (Debian's prometheus + promtool backfill).

Each case is backfilled with the label sets the upstream exporters emit; the file each shape comes
from is named at the case. Expected figures are computed here from the generating formulas (or by
the small trapezoid reference below), never taken from GreenCert's output.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_server import PrometheusServer, Sample, create_blocks, write_openmetrics
from test_prometheus import SCHEME, read, scope, write_config

from greencert.errors import SourceError
from greencert.sources.extract import extract_stage

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
START = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
MID = START + dt.timedelta(minutes=90)
END = START + dt.timedelta(hours=3)
S0, SM, S1 = START.timestamp(), MID.timestamp(), END.timestamp()
STEP = 15.0
PUE = 1.2
GRID = 300.0
OUT_RATE, IN_RATE = 800.0, 2400.0  # tokens per second


# dcgm-exporter internal/pkg/rendermetrics/render_metrics.go: the labels of every GPU metric.
def dcgm(host: str, gpu: str, uuid: str, cluster: str, **extra: str) -> dict[str, str]:
    return {
        "gpu": gpu,
        "UUID": uuid,
        "pci_bus_id": f"00000000:{17 + int(gpu):02X}:00.0",
        "device": f"nvidia{gpu}",
        "modelName": "NVIDIA A100-SXM4-80GB",
        "Hostname": host,
        "DCGM_FI_DRIVER_VERSION": "570.124.06",
        "job": "dcgm-exporter",
        "instance": f"{host}:9400",
        "cluster": cluster,
        **extra,
    }


# vllm/v1/metrics/loggers.py: token counters labelled model_name and engine; Prometheus' Kubernetes
# service discovery adds namespace, pod and instance.
def vllm(pod: str, ip: str, cluster: str, namespace: str = "serving", engine: str = "0") -> dict[str, str]:
    return {
        "model_name": "meta-llama/Llama-3.1-8B-Instruct",
        "engine": engine,
        "job": "vllm",
        "namespace": namespace,
        "pod": pod,
        "instance": f"{ip}:8000",
        "cluster": cluster,
    }


def grid(a: float, b: float, offset: float = 0.0) -> np.ndarray:
    """Scrape times a + offset + k * STEP up to b inclusive."""
    return a + offset + STEP * np.arange(int(np.floor((b - a - offset) / STEP)) + 1)


def tokens(labels: dict[str, str], t: np.ndarray, born: float) -> list[Sample]:
    """vLLM counters of one pod started at ``born`` (counters from zero)."""
    return [
        Sample("vllm:generation_tokens_total", labels, t, OUT_RATE * (t - born), "counter"),
        Sample("vllm:prompt_tokens_total", labels, t, IN_RATE * (t - born), "counter"),
    ]


# --- churn: a vLLM pod replaced on one GPU; the GPU's series change pod labels ------------------------
# dcgm-exporter internal/pkg/transformation/kubernetes.go adds pod, namespace, container while a pod
# holds the GPU (none in between).
SWITCH_LAST_OLD = S0 + 3600.0  # the old pod's last GPU sample; one unlabelled scrape, then the new pod
POD_A_LAST = S0 + 5400.0  # old vLLM pod: last scrape 01:30:00
POD_B_BORN, POD_B_FIRST = S0 + 5420.0, S0 + 5430.0  # new pod starts 01:30:20, first scrape 01:30:30


def churn_power(t: np.ndarray) -> np.ndarray:
    return np.where(t <= SWITCH_LAST_OLD, 300.0, 500.0)


def churn_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600)
    base = dcgm("k8s-1", "0", "GPU-2b6e1c4f-0d0c-4f6e-9b1a-6f1e2d3c4b5a", "churn")
    k8s_a = {"namespace": "serving", "pod": "llama-7d9f-abcde", "container": "vllm"}
    k8s_b = {"namespace": "serving", "pod": "llama-7d9f-xyz12", "container": "vllm"}
    old, gap, new = t <= SWITCH_LAST_OLD, t == SWITCH_LAST_OLD + STEP, t > SWITCH_LAST_OLD + STEP
    out = [
        Sample("DCGM_FI_DEV_POWER_USAGE", base | k8s_a, t[old], churn_power(t[old])),
        Sample("DCGM_FI_DEV_POWER_USAGE", base, t[gap], churn_power(t[gap])),
        Sample("DCGM_FI_DEV_POWER_USAGE", base | k8s_b, t[new], churn_power(t[new])),
    ]
    ta = t[t <= POD_A_LAST]
    tb = t[t >= POD_B_FIRST]
    out += tokens(vllm("llama-7d9f-abcde", "10.0.0.5", "churn"), ta, S0 - 7200)
    out += tokens(vllm("llama-7d9f-xyz12", "10.0.0.9", "churn"), tb, POD_B_BORN)
    return out


# --- scale-out and in: a second vLLM pod serves 01:00 to 02:00 beside the first -------------------
SCALE_IN, SCALE_OUT = S0 + 3600.0, S0 + 7200.0


def scale_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600)
    labels = dcgm("sc-1", "0", "GPU-12121212-3434-5656-7878-909090909090", "scale")
    second = t[(t >= SCALE_IN) & (t <= SCALE_OUT)]
    return [
        Sample("DCGM_FI_DEV_POWER_USAGE", labels, t, np.full(t.size, 400.0)),
        *tokens(vllm("s-0", "10.7.0.1", "scale"), t, S0 - 3600),
        *tokens(vllm("s-1", "10.7.0.2", "scale"), second, SCALE_IN - 5),
    ]


# --- MIG: one A100 split 3g.40gb + 4g.40gb, two teams; power repeated per GPU instance ----------------
# dcgm-exporter with MIG adds GPU_I_PROFILE and GPU_I_ID and repeats device power per instance
# (NVIDIA/dcgm-exporter issue #317).
def mig_power(t: np.ndarray) -> np.ndarray:
    return np.where(t < S0 + 5400, 280.0, 320.0)


def mig_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600)
    base = dcgm("mig-1", "0", "GPU-5e8a7f10-3c2d-4b1a-8e9f-0a1b2c3d4e5f", "mig")
    a = base | {
        "GPU_I_PROFILE": "3g.40gb",
        "GPU_I_ID": "1",
        "namespace": "team-a",
        "pod": "a-0",
        "container": "vllm",
    }
    b = base | {
        "GPU_I_PROFILE": "4g.40gb",
        "GPU_I_ID": "2",
        "namespace": "team-b",
        "pod": "b-0",
        "container": "vllm",
    }
    out = [
        Sample("DCGM_FI_DEV_POWER_USAGE", a, t, mig_power(t)),
        Sample("DCGM_FI_DEV_POWER_USAGE", b, t, mig_power(t)),
    ]
    out += tokens(vllm("a-0", "10.1.0.1", "mig", namespace="team-a"), t, S0 - 3600)
    out += tokens(vllm("b-0", "10.1.0.2", "mig", namespace="team-b"), t, S0 - 3600)
    return out


# --- a genuine overlap: two exporters report one GPU with different readings -------------------------
def dup_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600)
    uuid = "GPU-0f0f0f0f-1111-2222-3333-444455556666"
    one = dcgm("dup-1", "0", uuid, "dup")
    two = one | {"job": "dcgm-exporter-2", "instance": "dup-1:9401"}
    return [
        Sample("DCGM_FI_DEV_POWER_USAGE", one, t, np.full(t.size, 300.0)),
        Sample("DCGM_FI_DEV_POWER_USAGE", two, t, np.full(t.size, 302.0)),
        *tokens(vllm("d-0", "10.2.0.1", "dup"), t, S0 - 3600),
    ]


# --- Redfish and Kepler 0.11 node power; old Kepler names --------------------------------------------
REDFISH_W = 640.0
PSU_W = (410.0, 385.0)


def node_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600)
    out: list[Sample] = []
    # jenningsloy318/redfish_exporter collector/chassis_collector.go: ChassisPowerVoltageLabelNames.
    rf = {
        "resource": "power_wattage",
        "chassis_id": "System.Embedded.1",
        "power_voltage": "System Power Control",
    }
    rf |= {"power_voltage_id": "0", "job": "redfish", "instance": "bmc-7.oob", "cluster": "redfish"}
    out.append(Sample("redfish_chassis_power_average_consumed_watts", rf, t, np.full(t.size, REDFISH_W)))
    out += tokens(vllm("r-0", "10.3.0.1", "redfish"), t, S0 - 3600)
    # Kepler 0.11 docs/user/metrics.md: kepler_platform_watts per power supply.
    for n, watts in enumerate(PSU_W, start=1):
        kp = {"source": "redfish", "node_name": "kn-1", "bmc_id": "bmc-kn-1", "chassis_id": "1"}
        kp |= {"source_id": f"PSU{n}", "source_name": f"PS{n}", "source_type": "PowerSupply"}
        kp |= {"job": "kepler", "instance": "kn-1:28282", "cluster": "kepler"}
        out.append(Sample("kepler_platform_watts", kp, t, np.full(t.size, watts)))
    out += tokens(vllm("k-0", "10.4.0.1", "kepler"), t, S0 - 3600)
    # Kepler 0.7 (docs/design/metrics.md of that release): the platform as a joule counter.
    old = {
        "job": "kepler",
        "instance": "kn-2:9102",
        "cluster": "kepler07",
        "source": "acpi",
        "mode": "dynamic",
    }
    out.append(Sample("kepler_node_platform_joules_total", old, t, 500.0 * (t - t[0]), "counter"))
    out += tokens(vllm("o-0", "10.5.0.1", "kepler07"), t, S0 - 3600)
    return out


# --- exact edges: off-grid scrapes, varying power ---------------------------------------------------
EDGE_OFFSET = 7.0  # scrapes at :07, :22, ...: the period edges fall between samples


def edge_power(t: np.ndarray) -> np.ndarray:
    return 300.0 + 80.0 * np.sin(2 * np.pi * (t - S0) / 2400.0) + 0.25 * ((t - S0) % 97.0)


def edge_series() -> list[Sample]:
    t = grid(S0 - 600, S1 + 600, EDGE_OFFSET)
    labels = dcgm("edge-1", "0", "GPU-77777777-8888-9999-aaaa-bbbbccccdddd", "edge")
    tok_t = grid(S0 - 600, S1 + 600, 11.0)
    return [
        Sample("DCGM_FI_DEV_POWER_USAGE", labels, t, edge_power(t)),
        *tokens(vllm("e-0", "10.6.0.1", "edge"), tok_t, S0 - 3600),
    ]


def edge_reference_joules(a: float, b: float) -> float:
    """Trapezoid over the raw samples, linearly interpolated at a and b (the bundle's definition)."""
    t = grid(S0 - 600, S1 + 600, EDGE_OFFSET)
    p = edge_power(t)
    inner = (t > a) & (t < b)
    ts = np.concatenate([[a], t[inner], [b]])
    ps = np.concatenate([[np.interp(a, t, p)], p[inner], [np.interp(b, t, p)]])
    return float(np.sum(0.5 * (ps[1:] + ps[:-1]) * np.diff(ts)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("churn-data")
    series = churn_series() + scale_series() + mig_series() + dup_series() + node_series() + edge_series()
    blocks = create_blocks(write_openmetrics(series, root / "backfill.om"), root / "blocks")
    prom = PrometheusServer(blocks, tmp_path_factory.mktemp("churn-prometheus"))
    yield prom
    prom.stop()


@pytest.fixture
def conn(server: PrometheusServer, monkeypatch: pytest.MonkeyPatch) -> PrometheusServer:
    monkeypatch.setenv("AIRFLOW_CONN_GREENCERT_PROMETHEUS", server.connection_env(retries=1, backoff=0.05))
    return server


def source(cluster: str, profile: list[str], **manifest: object) -> dict[str, object]:
    return {
        "kind": "prometheus",
        "profile": profile,
        "labels": {"cluster": cluster},
        "step_seconds": STEP,
        "manifest": {
            "scope": scope(hardware="1x NVIDIA A100-SXM4-80GB"),
            "facility": {"pue": PUE},
            "grid": {"annual": GRID, "unit": "gCO2e/kWh", "source": "test factor"},
            **manifest,
        },
    }


def certify_bundle(bundle: Path, work: Path, scheme: Path = SCHEME) -> dict:
    """Validate and compute (the certified figures), without publishing: registry trust is elsewhere."""
    from greencert.pipeline import compute_stage, validate_stage

    validation = validate_stage(bundle, work, scheme)
    return json.loads(Path(compute_stage(bundle, validation, work, scheme)).read_text())


def manifest_of(bundle: Path) -> dict:
    return yaml.safe_load((bundle / "manifest.yaml").read_text())


def kwh(joules: float) -> float:
    return joules / 3.6e6


# --- 1. identity survives churn -------------------------------------------------------------------
def test_pod_replaced_on_a_gpu_is_one_device_and_tokens_one_instance(conn, tmp_path):
    config = write_config(tmp_path, {"churn": source("churn", ["dcgm", "vllm"])})
    bundle = Path(extract_stage(config, "churn", START, END))
    power = read(bundle, "power.parquet")
    assert set(power["device"]) == {"k8s-1:gpu0"}
    t = power["timestamp"]
    np.testing.assert_array_equal(t, grid(S0, S1))  # every scrape once, across the three label sets
    prov = manifest_of(bundle)["provenance"]
    (stitched,) = prov["queries"][0]["stitched"]
    assert [c["at"] for c in stitched["stitched"]] == ["2026-02-01T01:00:15.000Z", "2026-02-01T01:00:30.000Z"]
    assert stitched["stitched"][0]["changed"]["pod"] == ["llama-7d9f-abcde", None]

    tok = read(bundle, "tokens.parquet")
    assert len(set(tok["instance"])) == 1  # the replacement continues the old pod's chain
    (replaced,) = prov["queries"][2]["replaced_instances"]
    assert len(replaced["series"]) == 2
    assert prov["token_union_coverage"] == pytest.approx(1.0)

    cert = certify_bundle(bundle, tmp_path / "registry", SCHEME)
    # 300 W to 01:00:00, a 15 s trapezoid ramp to 500 W at 01:00:15, 500 W to the end.
    joules = 300.0 * 3600 + 0.5 * (300 + 500) * STEP + 500.0 * (7200 - STEP)
    assert cert["metrics"]["it_energy"]["value"] == pytest.approx(kwh(joules), rel=1e-11)
    # Old pod: the start interpolated, counted to its last scrape at 01:30:00; new pod: its first
    # reading (10 s since birth) is the increase since the reset, then counted to the end.
    out_tokens = (
        OUT_RATE * (POD_A_LAST - S0) + OUT_RATE * (POD_B_FIRST - POD_B_BORN) + OUT_RATE * (S1 - POD_B_FIRST)
    )
    assert cert["metrics"]["output_tokens"]["value"] == pytest.approx(out_tokens, rel=1e-11)
    assert cert["metrics"]["input_tokens"]["value"] == pytest.approx(
        out_tokens * IN_RATE / OUT_RATE, rel=1e-12
    )


def test_genuine_overlap_names_both_label_sets(conn, tmp_path):
    config = write_config(tmp_path, {"dup": source("dup", ["dcgm", "vllm"])})
    with pytest.raises(SourceError) as err:
        extract_stage(config, "dup", START, END)
    message = str(err.value)
    assert "job=dcgm-exporter," in message and "job=dcgm-exporter-2," in message
    assert "both measure device 'dup-1:gpu0'" in message and "one reads 300.0, the other 302.0" in message
    assert not (tmp_path / "work" / "bundles" / "dup").exists()


# --- 3. scale-out/in: the union of instances over time ---------------------------------------------
def test_scale_out_and_in_keeps_parallel_instances_apart_with_their_union(conn, tmp_path):
    config = write_config(tmp_path, {"scale": source("scale", ["dcgm", "vllm"])})
    bundle = Path(extract_stage(config, "scale", START, END))
    tok = read(bundle, "tokens.parquet")
    assert len(set(tok["instance"])) == 2  # alive at the same time: two counters, never joined
    prov = manifest_of(bundle)["provenance"]
    assert "replaced_instances" not in prov["queries"][2]
    assert prov["token_union_coverage"] == pytest.approx(1.0)
    # Both counters' increases over the period, each from its own samples (the second pod's first
    # reading, 5 s after its start, is its increase since zero).
    second = tok["instance"] == sorted(set(tok["instance"]))[1]
    assert tok["output_tokens"][second][-1] == OUT_RATE * (SCALE_OUT - (SCALE_IN - 5))
    # Certified on the union of its instances (each alone covers 100 % and 33 % of the period):
    # the tokens are both counters' increases within the period, the first over 3 h, the second
    # from its first to its last sample (increase() semantics: its first reading is not counted).
    figures = certify_bundle(bundle, tmp_path / "work")
    assert figures["metrics"]["output_tokens"]["value"] == pytest.approx(
        OUT_RATE * (S1 - S0) + OUT_RATE * (SCALE_OUT - SCALE_IN), rel=1e-12
    )


# --- 2. MIG: power once per physical GPU, energy split by slices -----------------------------------
MIG_JOULES = 280.0 * (5400 - STEP) + 0.5 * (280 + 320) * STEP + 320.0 * 5400


def test_mig_power_counted_once_per_gpu(conn, tmp_path):
    config = write_config(tmp_path, {"mig-whole": source("mig", ["dcgm", "vllm"])})
    src = source("mig", ["dcgm", "vllm"])
    src["series_labels"] = {"tokens": {"namespace": "team-a"}}
    config = write_config(tmp_path, {"mig-whole": src})
    bundle = Path(extract_stage(config, "mig-whole", START, END))
    power = read(bundle, "power.parquet")
    assert set(power["device"]) == {"mig-1:gpu0"} and power["timestamp"].size == grid(S0, S1).size
    query = manifest_of(bundle)["provenance"]["queries"][0]
    assert query["repeated_samples_dropped"] == grid(S0, S1).size
    (mig,) = query["mig"]
    assert [(i["gpu_instance"], i["profile"]) for i in mig["instances"]] == [
        ("1", "3g.40gb"),
        ("2", "4g.40gb"),
    ]
    cert = certify_bundle(bundle, tmp_path / "registry", SCHEME)
    assert cert["metrics"]["it_energy"]["value"] == pytest.approx(kwh(MIG_JOULES), rel=1e-11)


def test_mig_slice_shares_add_up_to_the_gpu(conn, tmp_path):
    deployments = {}
    for team in ("team-a", "team-b"):
        src = source(
            "mig", ["dcgm", "vllm"], attribution={"rule": "mig_slice_share", "match": {"namespace": team}}
        )
        src["series_labels"] = {"tokens": {"namespace": team}}
        deployments[team] = src
    config = write_config(tmp_path, deployments)
    energy = {}
    # NVIDIA MIG user guide, A100 80GB profiles: 3g.40gb = 3 and 4g.40gb = 4 of 7 compute slices.
    for team, slices in (("team-a", Fraction(3, 7)), ("team-b", Fraction(4, 7))):
        bundle = Path(extract_stage(config, team, START, END))
        attribution = manifest_of(bundle)["attribution"]
        assert attribution["rule"] == "mig_slice_share"
        assert attribution["detail"]["mig-1:gpu0"]["fraction"] == str(slices)
        assert attribution["shares"] == {"mig-1:gpu0": float(slices)}
        cert = certify_bundle(bundle, tmp_path / f"registry-{team}", SCHEME)
        # The certificate states its share and the rule (not only the evidence manifest).
        assert cert["methodology"]["attribution"]["rule"] == "mig_slice_share"
        assert cert["methodology"]["attribution"]["shares"] == {"mig-1:gpu0": float(slices)}
        energy[team] = cert["metrics"]["it_energy"]["value"]
        assert energy[team] == pytest.approx(kwh(MIG_JOULES) * float(slices), rel=1e-11)
    assert energy["team-a"] + energy["team-b"] == pytest.approx(kwh(MIG_JOULES), rel=1e-11)


# --- 4. real node exporters -------------------------------------------------------------------------
def test_redfish_exporter_profile(conn, tmp_path):
    config = write_config(tmp_path, {"rf": source("redfish", ["redfish", "vllm"])})
    bundle = Path(extract_stage(config, "rf", START, END))
    assert set(read(bundle, "power.parquet")["device"]) == {"bmc-7.oob/System.Embedded.1/0"}
    cert = certify_bundle(bundle, tmp_path / "registry", SCHEME)
    assert cert["metrics"]["it_energy"]["value"] == pytest.approx(kwh(REDFISH_W * 10800), rel=1e-11)


def test_kepler_011_power_supplies_add_up(conn, tmp_path):
    config = write_config(tmp_path, {"kp": source("kepler", ["kepler", "vllm"])})
    bundle = Path(extract_stage(config, "kp", START, END))
    assert set(read(bundle, "power.parquet")["device"]) == {"kn-1/psuPSU1", "kn-1/psuPSU2"}
    cert = certify_bundle(bundle, tmp_path / "registry", SCHEME)
    assert cert["metrics"]["it_energy"]["value"] == pytest.approx(kwh(sum(PSU_W) * 10800), rel=1e-11)


def test_old_kepler_is_refused_with_the_reason(conn, tmp_path):
    config = write_config(tmp_path, {"k07": source("kepler07", ["kepler", "vllm"])})
    with pytest.raises(SourceError) as err:
        extract_stage(config, "k07", START, END)
    message = str(err.value)
    assert "the server has kepler_node_platform_joules_total" in message
    assert "Kepler before 0.10" in message and 'kepler_platform_watts{cluster="kepler07"}' in message


# --- 5. exact period edges --------------------------------------------------------------------------
def test_two_halves_add_up_to_the_whole_through_prometheus(conn, tmp_path):
    config = write_config(tmp_path, {"edge": source("edge", ["dcgm", "vllm"])})
    figures = {}
    for a, b in ((START, MID), (MID, END), (START, END)):
        bundle = Path(extract_stage(config, "edge", a, b))
        cert = certify_bundle(bundle, tmp_path / f"registry-{a:%H%M}-{b:%H%M}", SCHEME)
        figures[(a, b)] = {
            k: cert["metrics"][k]["value"] for k in ("it_energy", "output_tokens", "input_tokens")
        }
    first, second, whole = figures[(START, MID)], figures[(MID, END)], figures[(START, END)]
    for name in first:
        assert first[name] + second[name] == pytest.approx(whole[name], rel=1e-11), name
    assert first["it_energy"] == pytest.approx(kwh(edge_reference_joules(S0, SM)), rel=1e-11)
    assert second["it_energy"] == pytest.approx(kwh(edge_reference_joules(SM, S1)), rel=1e-11)
    assert whole["output_tokens"] == pytest.approx(OUT_RATE * 10800, rel=1e-11)  # linear: exact


def test_file_bundle_and_prometheus_give_the_same_figures(conn, tmp_path):
    from greencert.bundle.writer import write_bundle

    config = write_config(tmp_path, {"edge": source("edge", ["dcgm", "vllm"])})
    pulled = Path(extract_stage(config, "edge", MID, END))
    from_prometheus = certify_bundle(pulled, tmp_path / "registry-prom", SCHEME)
    # By hand: every raw sample from 2 minutes before to 2 minutes after the period.
    t = grid(S0 - 600, S1 + 600, EDGE_OFFSET)
    keep = (t >= SM - 120) & (t <= S1 + STEP)
    tok_t = grid(S0 - 600, S1 + 600, 11.0)
    tk = (tok_t >= SM - 120) & (tok_t <= S1 + STEP)
    manifest = manifest_of(pulled)
    manifest.pop("provenance")
    bundle = write_bundle(
        tmp_path / "by-hand",
        manifest,
        {
            "power.parquet": {
                "timestamp": t[keep],
                "device": np.full(keep.sum(), "edge-1:gpu0"),
                "value": edge_power(t[keep]),
            },
            "tokens.parquet": {
                "timestamp": tok_t[tk],
                "instance": np.full(tk.sum(), "pod"),
                "output_tokens": OUT_RATE * (tok_t[tk] - (S0 - 3600)),
                "input_tokens": IN_RATE * (tok_t[tk] - (S0 - 3600)),
            },
        },
    )
    from_file = certify_bundle(bundle, tmp_path / "registry-file", SCHEME)
    assert from_file["metrics"] == from_prometheus["metrics"]


# --- 6. by hand: sources check and extract -----------------------------------------------------------
def greencert(*args: str, env_conn: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, AIRFLOW_CONN_GREENCERT_PROMETHEUS=env_conn)
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "greencert"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_sources_check_and_extract_by_hand(server, tmp_path):
    mig = source(
        "mig", ["dcgm", "vllm"], attribution={"rule": "mig_slice_share", "match": {"namespace": "team-a"}}
    )
    mig["series_labels"] = {"tokens": {"namespace": "team-a"}}
    config = write_config(tmp_path, {"churn": source("churn", ["dcgm", "vllm"]), "team-a": mig})
    window = ["--start", "2026-02-01T00:00:00Z", "--end", "2026-02-01T03:00:00Z"]
    conn_env = server.connection_env(retries=1, backoff=0.05)
    check = greencert("sources", "check", str(config), *window, "--json", env_conn=conn_env)
    assert check.returncode == 0, check.stderr[-3000:]
    report = {r["deployment"]: r for r in json.loads(check.stdout)}
    power = report["churn"]["roles"]["power"]["devices"][0]
    assert power["device"] == "k8s-1:gpu0" and power["series"] == 3 and len(power["stitched"]) == 2
    assert power["scrape_interval_seconds"] == STEP
    assert report["team-a"]["attribution"]["detail"]["mig-1:gpu0"]["fraction"] == "3/7"
    text = greencert("sources", "check", str(config), "--deployment", "team-a", *window, env_conn=conn_env)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "3/7" in text.stdout and "3g.40gb" in text.stdout and "churn" not in text.stdout

    out = tmp_path / "hand"
    run = greencert("extract", str(config), "churn", *window, "--out", str(out), env_conn=conn_env)
    assert run.returncode == 0, run.stderr[-3000:]
    # The same bundle as the DAG's extract task writes for that deployment and period.
    monkey = server.connection_env(retries=1, backoff=0.05)
    import os

    os.environ["AIRFLOW_CONN_GREENCERT_PROMETHEUS"] = monkey
    try:
        dag_bundle = Path(extract_stage(config, "churn", START, END))
    finally:
        del os.environ["AIRFLOW_CONN_GREENCERT_PROMETHEUS"]
    for name in ("manifest.yaml", "power.parquet", "tokens.parquet"):
        assert (out / name).read_bytes() == (dag_bundle / name).read_bytes(), name
    bad = greencert("extract", str(config), "nope", *window, "--out", str(tmp_path / "x"), env_conn=conn_env)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr

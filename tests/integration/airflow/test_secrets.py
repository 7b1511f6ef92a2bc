"""Secrets never leak, the pages escape data, the API is read-only: checked on one full DAG run.

The run uses every kind of secret GreenCert handles, each through an Airflow connection as an
operator would set it up:

* a Prometheus password (a real Prometheus with basic auth: the pull fails without it);
* an Electricity Maps API key and a WattTime password (the local stand-in checks both);
* the issuer's Ed25519 signing key (PEM in a connection's password).

Then every output is searched for every form of those secrets (plain text, the HTTP basic-auth
header value, each base64 line of the PEM and the raw key bytes): the DAG run's console output,
every file of the Airflow home (task logs and the metadata database, including the XCom table,
which is also read row by row), the registry and the work folder (Parquet decoded, since its pages
are compressed), and what the Airflow API server serves: the certificates page, its JSON API and
every registry file it serves.
"""

from __future__ import annotations

import base64
import crypt
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import yaml
from carbon_api_server import EM_KEY, WT_PASSWORD, WT_USER, ApiStandIn
from prometheus_server import PROMETHEUS, Sample, create_blocks, write_openmetrics

from airflow_cluster import Cluster, auth_env, free_port
from airflow_harness import airflow_env, migrate, run_airflow

pytestmark = pytest.mark.integration

DAY = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PROM_USER, PROM_PASSWORD = "greencert-reader", "prom-pw-3c9e71f0"


def prometheus_data(root: Path) -> Path:
    """One GPU and one vLLM engine on cluster "sec", every 15 s around 2026-01-01."""
    root.mkdir(parents=True, exist_ok=True)
    t0 = DAY.timestamp()
    t = np.arange(t0 - 600, t0 + 86400 + 600 + 1, 15.0)
    gpu = {"gpu": "0", "UUID": "GPU-sec-0", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-s"}
    gpu |= {"job": "dcgm", "instance": "node-s:9400", "cluster": "sec"}
    engine = {"model_name": "meta-llama/Llama-3.1-8B-Instruct", "engine": "0", "job": "vllm"}
    engine |= {"instance": "vllm-s:8000", "cluster": "sec"}
    series = [
        Sample("DCGM_FI_DEV_POWER_USAGE", gpu, t, np.full(t.size, 350.0)),
        Sample("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu, t, 1e9 + 350e3 * (t - t[0]), "unknown"),
        Sample("vllm:generation_tokens_total", engine, t, 1000.0 * (t - t[0]), "counter"),
        Sample("vllm:prompt_tokens_total", engine, t, 3000.0 * (t - t[0]), "counter"),
    ]
    return create_blocks(write_openmetrics(series, root / "data.om"), root / "blocks")


class AuthenticatedPrometheus:
    """``prometheus`` with HTTP basic auth (``--web.config.file``, bcrypt hash as Prometheus requires)."""

    def __init__(self, blocks: Path, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(blocks, workdir / "data")
        (workdir / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        hashed = crypt.crypt(PROM_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        (workdir / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {PROM_USER: hashed}}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--web.config.file={workdir / 'web.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (workdir / "prometheus.log").read_text()[-2000:]
            try:
                if requests.get(f"{self.url}/-/ready", auth=(PROM_USER, PROM_PASSWORD), timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError("prometheus did not become ready")
        # The password is really required.
        assert requests.get(f"{self.url}/api/v1/status/buildinfo", timeout=5).status_code == 401

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()


def signing_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def needles(pem: bytes) -> dict[str, bytes]:
    """Every form a secret could take in an output."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pem, None)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    out = {
        "prometheus password": PROM_PASSWORD.encode(),
        "prometheus basic-auth header": base64.b64encode(f"{PROM_USER}:{PROM_PASSWORD}".encode()),
        "electricity maps key": EM_KEY.encode(),
        "watttime password": WT_PASSWORD.encode(),
        "watttime basic-auth header": base64.b64encode(f"{WT_USER}:{WT_PASSWORD}".encode()),
        "signing key (raw hex)": raw.hex().encode(),
        "signing key (raw base64)": base64.b64encode(raw).rstrip(b"="),
    }
    body = [line for line in pem.splitlines() if line and not line.startswith(b"-----")]
    for i, line in enumerate(body):
        out[f"signing key PEM line {i + 1}"] = line
    return out


def haystacks(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``; Parquet files also decoded to text (their pages are compressed)."""
    out = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            data += str(table.schema.metadata).encode() + str(table.to_pylist()).encode()
        out[str(path)] = data
    return out


def leaks(places: dict[str, bytes], secrets: dict[str, bytes]) -> list[str]:
    return [
        f"{what} in {where}" for where, data in places.items() for what, s in secrets.items() if s in data
    ]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("secrets")
    prometheus = AuthenticatedPrometheus(prometheus_data(root / "prom-data"), root / "prometheus")
    api = ApiStandIn().start()
    pem = signing_pem()
    try:
        fleet = {
            "registry": str(root / "registry"),
            "work_dir": str(root / "work"),
            "deployments": [
                {"deployment": "chat-8b", "source": {"kind": "simulated", "step_seconds": 60}},
                {
                    "deployment": "prom-8b",
                    "source": {
                        "kind": "prometheus",
                        "conn_id": "gc_sec_prometheus",
                        "profile": ["dcgm", "vllm"],
                        "labels": {"cluster": "sec"},
                        "step_seconds": 15,
                        "manifest": {
                            "scope": {
                                "site": "dc-sec-1",
                                "model": "meta-llama/Llama-3.1-8B-Instruct",
                                "hardware": "1x NVIDIA H100 80GB HBM3",
                                "active_params_billions": 8,
                                "gpu_count": 1,
                            },
                            "facility": {"pue": 1.2},
                            "grid": {"annual": 400, "unit": "gCO2e/kWh", "source": "test factor"},
                        },
                    },
                },
            ],
            "carbon": {
                "dc-east-1": {"grid": {"kind": "electricitymaps", "zone": "DE", "conn_id": "gc_sec_em"}},
                "dc-sec-1": {
                    "marginal": {"kind": "watttime", "region": "CAISO_NORTH", "conn_id": "gc_sec_wt"}
                },
            },
        }
        config = root / "fleet.yaml"
        config.write_text(yaml.safe_dump(fleet, sort_keys=False))
        connections = {
            "AIRFLOW_CONN_GC_SEC_PROMETHEUS": {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": prometheus.port,
                "login": PROM_USER,
                "password": PROM_PASSWORD,
                "extra": {"retries": 1, "backoff": 0.05},
            },
            "AIRFLOW_CONN_GC_SEC_EM": {"conn_type": "http", "host": api.url, "password": EM_KEY},
            "AIRFLOW_CONN_GC_SEC_WT": {
                "conn_type": "http",
                "host": api.url,
                "login": WT_USER,
                "password": WT_PASSWORD,
            },
            "AIRFLOW_CONN_GC_SEC_SIGNING": {"conn_type": "generic", "password": pem.decode()},
        }
        env = airflow_env(
            root / "home",
            **{k: json.dumps(v) for k, v in connections.items()},
            GREENCERT_SIGNING_CONN_ID="gc_sec_signing",
            GREENCERT_CONFIG=str(config),
            GREENCERT_LABEL_PDF="0",
            GREENCERT_HOME=str(root / "greencert-home"),
        )
        env.pop("GREENCERT_SIGNING_KEY", None)
        migrate(env)
        proc = run_airflow(
            [
                "dags",
                "test",
                "green_certification",
                "2026-01-02",
                "-c",
                json.dumps({"config_path": str(config)}),
            ],
            env,
            timeout=1800,
        )
        assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
        yield {"root": root, "env": env, "proc": proc, "pem": pem, "registry": root / "registry"}
    finally:
        api.stop()
        prometheus.stop()


def test_the_run_used_every_secret(full_run) -> None:
    from greencert.certificate.registry import certificate_files

    certs = {p.parent.name: json.loads(p.read_bytes()) for p in certificate_files(full_run["registry"])}
    assert set(certs) == {"chat-8b", "prom-8b"}
    # Signed with the connection's key (not a development key).
    for cert in certs.values():
        assert cert["signing"]["development_key"] is False
    # Electricity Maps' hourly intensity for dc-east-1; WattTime's marginal rates for dc-sec-1.
    assert "Electricity Maps" in json.dumps(certs["chat-8b"]["methodology"])
    assert certs["prom-8b"]["carbon"]["marginal"]["emissions"]["value"] > 0
    assert certs["prom-8b"]["data_quality"]["rows"]  # pulled from the password-protected Prometheus


def test_no_secret_in_logs_database_xcom_registry_or_work_files(full_run) -> None:
    secrets = needles(full_run["pem"])
    root: Path = full_run["root"]
    places = {
        "dags test stdout": full_run["proc"].stdout.encode(),
        "dags test stderr": full_run["proc"].stderr.encode(),
    }
    for folder in (root / "home", full_run["registry"], root / "work"):
        places.update(haystacks(folder))
    assert any(p.endswith("airflow.db") for p in places)
    with sqlite3.connect(root / "home" / "airflow.db") as db:
        rows = db.execute("select dag_id, task_id, map_index, key, value from xcom").fetchall()
    assert len(rows) >= 10  # paths of every stage of both deployments
    places["xcom table"] = repr(rows).encode()
    assert leaks(places, secrets) == []
    # The search does find the material when it is there (a control: the needles are right).
    from cryptography.hazmat.primitives import serialization

    raw = serialization.load_pem_private_key(full_run["pem"], None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    control = {
        "pem": full_run["pem"],
        "header": b"Authorization: Basic " + base64.b64encode(f"{PROM_USER}:{PROM_PASSWORD}".encode()),
        "dump": repr(raw.hex()).encode(),
    }
    found = {what.split(" in ")[0] for what in leaks(control, secrets)}
    assert {k for k in secrets if k.startswith("signing key PEM line")} <= found
    assert {"prometheus basic-auth header", "signing key (raw hex)"} <= found


def test_api_server_pages_and_files_leak_nothing_and_are_read_only(full_run) -> None:
    root: Path = full_run["root"]
    port = free_port()
    env = {
        **full_run["env"],
        **auth_env(root / "home", role="admin"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "GREENCERT_REGISTRY": str(full_run["registry"]),
    }
    cluster = Cluster(root / "home", env, port)
    cluster.start("api-server", ["api-server"])
    try:
        cluster.wait_api()
        auth = {"Authorization": f"Bearer {cluster.token()}"}
        base = f"{cluster.api_url}/greencert"
        served = {}
        page = requests.get(f"{base}/", headers=auth, timeout=60)
        api = requests.get(f"{base}/certificates", params={"limit": 500}, headers=auth, timeout=60)
        assert page.status_code == 200 and api.status_code == 200
        served["page"], served["json api"] = page.content, api.content
        registry: Path = full_run["registry"]
        files = [p for p in registry.rglob("*") if p.is_file() and not p.name.startswith(".")]
        fetched = 0
        for path in files:
            rel = path.relative_to(registry).as_posix()
            r = requests.get(f"{base}/files/{rel}", headers=auth, timeout=60)
            if r.status_code == 200:
                fetched += 1
                assert r.content == path.read_bytes(), rel
                served[rel] = r.content
        assert fetched >= 10
        assert leaks(served, needles(full_run["pem"])) == []
        # Read-only: no method but GET (and HEAD) is routed, even for an administrator.
        for route in ("/", "/certificates", f"/files/{files[0].relative_to(registry).as_posix()}"):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = requests.request(method, f"{base}{route}", headers=auth, timeout=60)
                assert r.status_code == 405, (method, route, r.status_code)
        assert sorted(p.relative_to(registry).as_posix() for p in files) == sorted(
            p.relative_to(registry).as_posix()
            for p in registry.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
    finally:
        cluster.stop()

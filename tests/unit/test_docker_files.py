"""docker/: what can be checked without a Docker engine.

The compose file parses and has the documented services, images, executor and volumes; every file it
or the Dockerfile refers to exists; every variable it needs is in .env.example; the image's Airflow
is the lock file's; the container fleet config is a valid fleet config; Prometheus' config passes
promtool; and the package the image installs (non-editable) declares every data file it needs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
AIRFLOW_SERVICES = {
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


def env_example() -> dict[str, str]:
    out = {}
    for n, line in enumerate((DOCKER / ".env.example").read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", line), f".env.example line {n} is not NAME=value: {line!r}"
        name, value = line.split("=", 1)
        out[name] = value
    return out


def test_services_images_and_commands(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis", "prometheus"}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus:v")
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-init": ["db", "migrate"],
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
        "airflow-worker": ["celery", "worker"],
    }
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        assert svc["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        # Workers hand each other paths: registry, work folder and issuer home are shared volumes.
        assert {"/opt/greencert/registry", "/opt/greencert/work", "/opt/greencert/home"} <= mounts
    assert services["airflow-worker"]["deploy"]["replicas"] == "${GREENCERT_WORKERS:-2}"
    assert services["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"
    assert set(compose["volumes"]) == {
        "postgres-db",
        "registry",
        "work",
        "greencert-home",
        "airflow-logs",
        "prometheus-data",
    }


def test_every_referenced_file_exists(compose: dict) -> None:
    for name, svc in compose["services"].items():
        if "build" in svc:
            context = (DOCKER / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount source {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    # Every COPY source of the Dockerfile exists in the build context (the repository root).
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+)$", dockerfile, flags=re.M)
    assert copies
    for line in copies:
        *sources, _target = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies {source}, which does not exist"


def test_image_is_the_locked_airflow() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", dockerfile, flags=re.M).group(1)
    assert base == "apache/airflow:3.3.2-python3.11"
    lock = (REPO / "requirements.lock").read_text()
    assert re.search(r"^apache-airflow==3\.3\.2$", lock, flags=re.M)
    assert re.search(r"^apache-airflow-providers-celery==", lock, flags=re.M)
    assert re.search(r"^asyncpg==", lock, flags=re.M)  # Airflow's async engine on PostgreSQL
    assert "pip install --no-cache-dir -r /opt/greencert/requirements.lock" in dockerfile


def test_every_variable_without_default_is_in_env_example() -> None:
    text = (DOCKER / "docker-compose.yaml").read_text()
    names = {m.group(1) for m in re.finditer(r"\$\{([A-Z0-9_]+)\}", text)}
    with_default = {m.group(1) for m in re.finditer(r"\$\{([A-Z0-9_]+):-", text)}
    example = env_example()
    assert names - set(example) == set()
    assert with_default - set(example) == set()  # documented too
    assert {"POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET"} <= set(example)


def test_container_fleet_config_is_valid_and_matches_the_sample_fleet() -> None:
    from greencert.config import load_config

    docker_fleet = load_config(DOCKER / "fleet.yaml")
    sample = load_config(REPO / "dags" / "config" / "sample_fleet.yaml")
    assert str(docker_fleet.registry_path) == "/opt/greencert/registry"
    assert str(docker_fleet.work_path) == "/opt/greencert/work"
    assert docker_fleet.deployments == sample.deployments


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    config = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    # promtool resolves the file_sd glob on this machine: point it at the shipped targets folder.
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = [str(DOCKER / "prometheus" / "targets" / Path(f).name) for f in sd["files"]]
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stdout + proc.stderr
    for target_file in (DOCKER / "prometheus" / "targets").glob("*.json"):
        assert isinstance(json.loads(target_file.read_text()), list)


def test_package_declares_every_data_file_the_image_needs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["greencert"]
    package = REPO / "plugins" / "greencert"
    undeclared = []
    for path in package.rglob("*"):
        if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package).as_posix()
        if not any(fnmatch.fnmatch(rel, p) for p in patterns):
            undeclared.append(rel)
    assert undeclared == []

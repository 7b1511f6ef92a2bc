"""Real Airflow deployments for integration tests: servers as separate processes, as operators run them.

* ``reference_run``: the certification DAG run with ``airflow dags test`` on SQLite for three
  days (the "scheduled runs" the distributed run must reproduce byte for byte); cached for the
  session so the browser test and the Celery test share it.
* ``Cluster``: API server, scheduler, dag-processor and Celery workers on a PostgreSQL database of
  the test's own and a Redis database number of its own, each a process with its own log file.

Every process this module starts is stopped by its own id (process group it created).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from airflow_harness import AIRFLOW, REPO, airflow_env, migrate, run_airflow

TESTS = Path(__file__).resolve().parent
PG_DSN = "postgresql://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# The full sample fleet is certified for this day (the browser test lists it); the Celery test
# certifies a two-site subset of the fleet for more days. A run at logical date D certifies [D-1, D).
FULL_FLEET_DATE = "2026-01-02"
SUBSET = ("chat-8b", "code-32b")
TEST_USER, TEST_PASSWORD = "greencert-tester", "not-a-real-secret-" + secrets.token_hex(4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fleet_config(folder: Path, deployments: tuple[str, ...] | None = None) -> Path:
    """The sample fleet (same sources and carbon settings) publishing into ``folder``, optionally
    restricted to some deployments."""
    config = yaml.safe_load((REPO / "dags" / "config" / "sample_fleet.yaml").read_text())
    config["registry"] = str(folder / "registry")
    config["work_dir"] = str(folder / "work")
    if deployments:
        config["deployments"] = [d for d in config["deployments"] if d["deployment"] in deployments]
    path = folder / "fleet.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def signing_key(folder: Path) -> Path:
    """A real Ed25519 issuer key made by openssl, as an operator would provision it."""
    path = folder / "issuer-key.pem"
    if not path.exists():
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)], check=True)
        path.chmod(0o600)
    return path


def certificate_files(registry: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every signed certificate and its signature."""
    from trust_helpers import is_registry_state

    out = {}
    for path in sorted(registry.glob("*/*/*")):
        rel = path.relative_to(registry).as_posix()
        if is_registry_state(rel) or path.name.endswith(".validation.json"):
            continue
        if path.name.endswith((".json", ".json.sig")):
            out[rel] = path.read_bytes()
    return out


@dataclass
class Reference:
    home: Path
    env: dict[str, str]
    config: Path
    registry: Path
    key: Path
    days: list[str] = field(default_factory=list)

    def certify(self, day: str, deployments: tuple[str, ...] | None = None) -> None:
        """``airflow dags test green_certification <day>`` (once per day), optionally for some deployments."""
        if day in self.days:
            return
        args = ["dags", "test", "green_certification", day]
        if deployments:
            args += ["-c", json.dumps({"deployments": list(deployments)})]
        proc = run_airflow(args, self.env, timeout=900)
        assert proc.returncode == 0, f"dags test {day} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        self.days.append(day)


_REFERENCE: dict[str, Reference] = {}


def reference_run(base: Path) -> Reference:
    """The sample fleet certified by ``airflow dags test`` on SQLite for FULL_FLEET_DATE (cached per
    session; more days are added with ``Reference.certify``)."""
    if "ref" in _REFERENCE:
        return _REFERENCE["ref"]
    base.mkdir(parents=True, exist_ok=True)
    config = fleet_config(base)
    key = signing_key(base)
    env = airflow_env(
        base / "home",
        GREENCERT_CONFIG=str(config),
        GREENCERT_SIGNING_KEY=str(key),
        GREENCERT_LABEL_PDF="0",
    )
    migrate(env)
    ref = Reference(base / "home", env, config, base / "registry", key)
    ref.certify(FULL_FLEET_DATE)
    _REFERENCE["ref"] = ref
    return ref


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # servers still starting: connection refused, 5xx...
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error!r})")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Cluster:
    """One Airflow deployment: shared environment, processes, and a REST client."""

    home: Path
    env: dict[str, str]
    api_port: int
    servers: list[Server] = field(default_factory=list)
    _token: str | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, name: str, args: list[str], **extra_env: str) -> Server:
        log = self.home / f"{name}.log"
        handle = log.open("wb")
        proc = subprocess.Popen(
            [AIRFLOW, *args],
            env={**self.env, **extra_env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
            start_new_session=True,  # its own process group: stopped with its children, by id
        )
        handle.close()
        server = Server(name, proc, log)
        self.servers.append(server)
        return server

    def check_running(self) -> None:
        for s in self.servers:
            if s.proc.poll() is not None:
                raise RuntimeError(f"{s.name} exited with {s.proc.returncode}:\n{s.tail()}")

    def stop(self) -> None:
        """Stop every process this cluster started, and their descendants (task supervisors and
        task processes run in sessions of their own), by process id."""
        import psutil

        procs: list[psutil.Process] = []
        for s in self.servers:
            try:
                root = psutil.Process(s.proc.pid)
                procs += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for s in self.servers:
            try:
                s.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = run_airflow(list(args), self.env, timeout=timeout)
        assert proc.returncode == 0, (
            f"airflow {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc

    def wait_api(self, timeout: float = 180) -> None:
        def healthy() -> bool:
            self.check_running()
            return requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).status_code == 200

        wait_for(healthy, timeout, "the API server")

    def token(self) -> str:
        if self._token is None:
            r = requests.post(
                f"{self.api_url}/auth/token",
                json={"username": TEST_USER, "password": TEST_PASSWORD},
                timeout=30,
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        r = requests.request(
            method,
            f"{self.api_url}{path}",
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
            **kwargs,
        )
        assert r.status_code < 300, f"{method} {path}: HTTP {r.status_code} {r.text[:2000]}"
        return r.json() if r.content else None

    def logs(self) -> str:
        return "\n".join(f"===== {s.name} =====\n{s.tail()}" for s in self.servers)


def auth_env(home: Path, role: str = "admin") -> dict[str, str]:
    """Simple auth manager with one known user (password file written here)."""
    passwords = home / "passwords.json"
    home.mkdir(parents=True, exist_ok=True)
    passwords.write_text(json.dumps({TEST_USER: TEST_PASSWORD}))
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{TEST_USER}:{role}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
    }


def create_database(name: str) -> str:
    import psycopg2

    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"{PG_DSN}/{name}"


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def claim_redis_db() -> int:
    """An empty Redis database number (the highest free one), so the broker queue is the test's own."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        # SETNX a claim key: two test sessions never pick the same number.
        if client.dbsize() == 0 and client.set("greencert-test-claim", os.getpid(), nx=True, ex=3600):
            return number
    raise RuntimeError("no empty Redis database number (1..15) to use as the test broker")


def release_redis_db(number: int) -> None:
    import redis

    redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number).flushdb()


def cluster_env(home: Path, db_url: str, redis_db: int, api_port: int, **extra: str) -> dict[str, str]:
    sqlalchemy_url = db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return airflow_env(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlalchemy_url,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+{sqlalchemy_url}",
        AIRFLOW__CELERY__WORKER_CONCURRENCY="1",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{api_port}",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        # Every component must sign and check task tokens with the same secret.
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__CORE__FERNET_KEY="",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        **auth_env(home),
        **extra,
    )


def start_celery_deployment(cluster: Cluster, workers: tuple[str, ...]) -> None:
    """Migrate, then start API server, scheduler, dag-processor and one Celery worker per name
    (concurrency 1, each recording its own name as the task hostname); wait for the API."""
    migrate(cluster.env)
    cluster.start("api-server", ["api-server"])
    cluster.start("scheduler", ["scheduler"])
    cluster.start("dag-processor", ["dag-processor"])
    for name in workers:
        cluster.start(
            name,
            ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h"],
            # The workers share this machine: each records its own name as the task hostname.
            GREENCERT_WORKER_NAME=name,
            AIRFLOW__CORE__HOSTNAME_CALLABLE="worker_identity.hostname",
            PYTHONPATH=f"{REPO / 'plugins'}:{TESTS}",
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        )
    cluster.wait_api()

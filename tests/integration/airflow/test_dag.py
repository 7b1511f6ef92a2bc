"""The certification DAG: it parses cleanly, and one real `airflow dags test` run certifies the sample fleet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_harness import REPO, airflow_env, migrate, run_airflow

pytestmark = pytest.mark.integration


def test_dagbag_has_no_import_errors(tmp_path: Path) -> None:
    code = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "import json; print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()}, 'dags': sorted(bag.dag_ids)}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert "green_certification" in result["dags"]


def test_dag_file_does_not_import_heavy_modules_at_parse_time(tmp_path: Path) -> None:
    code = (
        "import sys, runpy\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        f"runpy.run_path({str(REPO / 'dags' / 'green_certification.py')!r})\n"
        "new = set(sys.modules) - before\n"
        "heavy = ('great_expectations', 'pandas', 'numpy', 'pyarrow', 'pint', 'duckdb')\n"
        "print('HEAVY=' + ','.join(sorted(m for m in new if m.split('.')[0] in heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=airflow_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY="


def test_airflow_dags_test_certifies_every_sample_deployment(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "dags" / "config" / "sample_fleet.yaml").read_text())
    config["registry"] = str(tmp_path / "registry")
    config["work_dir"] = str(tmp_path / "work")
    config_path = tmp_path / "fleet.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = airflow_env(tmp_path / "home")
    migrate(env)
    proc = run_airflow(
        [
            "dags",
            "test",
            "green_certification",
            "2026-01-02",
            "-c",
            json.dumps({"config_path": str(config_path)}),
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    certs = sorted((tmp_path / "registry").glob("*/*/*.*Z.json"))
    deployments = {c["deployment"] for c in config["deployments"]}
    assert {p.parent.name for p in certs} == deployments
    for path in certs:
        cert = json.loads(path.read_text())
        # The run at logical date 2026-01-02 certifies the day before it.
        assert cert["period"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
        assert cert["grade"] in "ABCDEFG"
        assert cert["data_quality"]["validation_success"] is True
    # The DAG and the CLI are one way to certify: the same bundle through the CLI gives the same bytes.
    from greencert.pipeline import certify

    bundle = tmp_path / "work" / "bundles" / "chat-8b" / "20260101T0000Z_20260102T0000Z"
    again = Path(certify(bundle, tmp_path / "cli"))
    dag_cert = next(p for p in certs if p.parent.name == "chat-8b")
    assert again.read_bytes() == dag_cert.read_bytes()


def test_the_dag_certifies_each_segment_of_a_segmented_bundle(tmp_path: Path) -> None:
    """A bundle whose manifest declares a vLLM upgrade at 13:00: the DAG publishes one certificate per
    segment, byte-identical to what `greencert certify` (segments.certify_bundle) publishes."""
    import numpy as np

    from greencert.segments import certify_bundle
    from integrity_bundles import build

    segments = [
        {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T13:00:00Z"},
        {
            "start": "2026-01-01T13:00:00Z",
            "end": "2026-01-02T00:00:00Z",
            "scope": {"engine_version": "0.11.1"},
            "reason": "vLLM upgrade",
        },
    ]
    bundle = build(
        tmp_path / "bundles" / "integrity-8b",
        hours=24,
        power=lambda t: np.where(t <= 13 * 3600, 500.0, 300.0),
        power_spec={"meter_class": "pdu"},
        scope={"serving_engine": "vllm", "engine_version": "0.5.4"},
        manifest_extra={"segments": segments},
    )
    config = {
        "registry": str(tmp_path / "registry"),
        "work_dir": str(tmp_path / "work"),
        "deployments": [
            {
                "deployment": "integrity-8b",
                "source": {"kind": "bundle", "path": str(tmp_path / "bundles" / "{deployment}")},
            }
        ],
    }
    config_path = tmp_path / "fleet.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = airflow_env(tmp_path / "home")
    migrate(env)
    proc = run_airflow(
        [
            "dags",
            "test",
            "green_certification",
            "2026-01-02",
            "-c",
            json.dumps({"config_path": str(config_path)}),
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    certs = sorted((tmp_path / "registry").glob("*/*/*.*Z.json"))
    assert [p.name for p in certs] == [
        "dc-test-1.integrity-8b.20260101T0000Z-20260101T1300Z.json",
        "dc-test-1.integrity-8b.20260101T1300Z-20260102T0000Z.json",
    ]
    engines = [json.loads(p.read_text())["scope"]["engine_version"] for p in certs]
    assert engines == ["0.5.4", "0.11.1"]
    # One way to certify: the CLI's segment path gives the same bytes.
    cli = [Path(p) for p in certify_bundle(bundle, tmp_path / "cli")]
    assert [p.read_bytes() for p in cli] == [p.read_bytes() for p in certs]

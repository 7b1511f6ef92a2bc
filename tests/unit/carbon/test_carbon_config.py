"""Per-site carbon settings of the fleet config, applied when the bundle is extracted."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)


def fleet(tmp_path: Path, carbon: dict) -> Path:
    config = {
        "registry": "registry",
        "work_dir": "work",
        "deployments": [{"deployment": "code-32b", "source": {"kind": "simulated", "step_seconds": 300}}],
        "carbon": carbon,
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_offline_regional_factor_goes_into_the_manifest_with_source_and_year(tmp_path):
    from greencert.sources.extract import extract_stage

    # The simulated code-32b deployment runs on site dc-cn-1.
    path = fleet(tmp_path, {"dc-cn-1": {"grid": {"kind": "default", "factor": "CN-East"}}})
    bundle = Path(extract_stage(path, "code-32b", START, END))
    grid = yaml.safe_load((bundle / "manifest.yaml").read_text())["grid"]
    # MEE & NBS 2023 East China regional factor: 0.5500 kgCO2/kWh = 550 g/kWh.
    assert grid["annual"] == pytest.approx(550.0)
    assert grid["unit"] == "gCO2e/kWh" and grid["year"] == 2023 and grid["zone"] == "CN-East"
    assert "MEE & NBS" in grid["source"] and "East China" in grid["source"]
    assert not (bundle / "grid.csv").exists()


def test_unknown_factor_key_names_the_known_ones(tmp_path):
    from greencert.errors import ConfigError
    from greencert.sources.extract import extract_stage

    path = fleet(tmp_path, {"dc-cn-1": {"grid": {"kind": "default", "factor": "CN-Mars"}}})
    with pytest.raises(ConfigError) as err:
        extract_stage(path, "code-32b", START, END)
    assert "CN-Mars" in str(err.value) and "CN-East" in str(err.value)


def test_site_without_carbon_settings_is_left_alone(tmp_path):
    from greencert.sources.extract import extract_stage

    path = fleet(tmp_path, {"dc-east-1": {"grid": {"kind": "default", "factor": "US"}}})
    bundle = Path(extract_stage(path, "code-32b", START, END))
    grid = yaml.safe_load((bundle / "manifest.yaml").read_text())["grid"]
    assert grid["annual"] == 530.6  # what the simulator wrote for dc-cn-1


def test_missing_airflow_connection_is_a_clear_error(tmp_path, monkeypatch):
    from greencert.errors import SourceError
    from greencert.sources.extract import extract_stage

    monkeypatch.delenv("AIRFLOW_CONN_GC_NOWHERE", raising=False)
    path = fleet(
        tmp_path, {"dc-cn-1": {"grid": {"kind": "electricitymaps", "zone": "CN", "conn_id": "gc_nowhere"}}}
    )
    with pytest.raises(SourceError) as err:
        extract_stage(path, "code-32b", START, END)
    assert "gc_nowhere" in str(err.value) and "AIRFLOW_CONN_GC_NOWHERE" in str(err.value)


def test_config_rejects_unknown_keys(tmp_path):
    from greencert.config import load_config
    from greencert.errors import ConfigError

    path = fleet(tmp_path, {"dc-cn-1": {"grid": {"kind": "default", "factr": "CN"}}})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "factr" in str(err.value)

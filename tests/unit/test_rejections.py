"""The foundation's rejection cases: clear message naming the problem and where, nothing published."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_golden_bundle
from greencert.errors import BundleError, ValidationFailed
from greencert.pipeline import certify


def _edit_manifest(bundle: Path, change) -> None:
    path = bundle / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def _published(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()] if out.exists() else []


def test_negative_power_is_rejected_naming_file_line_and_device(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    lines = (bundle / "power.csv").read_text().splitlines()
    # Data line 11 (file line 12) gets a negative value.
    cells = lines[11].split(",")
    cells[-1] = "-5.0"
    lines[11] = ",".join(cells)
    (bundle / "power.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationFailed) as err:
        certify(bundle, tmp_path / "out")
    msg = str(err.value)
    assert "value is negative" in msg
    assert "power.csv line 12" in msg
    assert "'gpu0'" in msg
    assert _published(tmp_path / "out") == []


def test_unknown_unit_is_rejected_naming_the_key(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    _edit_manifest(bundle, lambda m: m["power"].update(unit="Wattz"))
    with pytest.raises(BundleError) as err:
        certify(bundle, tmp_path / "out")
    assert "unknown unit 'Wattz'" in str(err.value)
    assert "power.unit" in str(err.value)
    assert _published(tmp_path / "out") == []


def test_energy_unit_for_a_gauge_is_a_dimension_error(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    _edit_manifest(bundle, lambda m: m["power"].update(unit="kWh"))
    with pytest.raises(BundleError, match="dimension"):
        certify(bundle, tmp_path / "out")


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    (bundle / "tokens.csv").unlink()
    with pytest.raises(BundleError) as err:
        certify(bundle, tmp_path / "out")
    assert "tokens file is missing" in str(err.value)
    assert "tokens.csv" in str(err.value)
    assert _published(tmp_path / "out") == []


def test_manifest_typo_is_not_ignored(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    _edit_manifest(bundle, lambda m: m["power"].update(unti="W"))
    with pytest.raises(BundleError, match=r"power\.unti: unknown key"):
        certify(bundle, tmp_path / "out")


def test_cli_exits_non_zero_with_the_message_and_writes_nothing(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    _edit_manifest(bundle, lambda m: m["power"].update(unit="Wattz"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    proc = subprocess.run(
        [sys.executable, "-m", "greencert.cli", "certify", str(bundle), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode != 0
    assert "unknown unit 'Wattz'" in proc.stderr
    assert _published(tmp_path / "out") == []

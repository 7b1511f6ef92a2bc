"""Golden cases of the foundation issue, computed by hand.

500 W for exactly 1 h = 0.5 kWh IT; x PUE 1.2 = 0.6 kWh facility;
1,000,000 output tokens -> 0.6 kWh/Mtok; 0.6 kWh x 400 g/kWh = 240 g -> 240 gCO2e/Mtok.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_golden_bundle
from greencert.pipeline import certify

EXPECTED = {
    "it_energy": (0.5, "kWh"),
    "facility_energy": (0.6, "kWh"),
    "output_tokens": (1_000_000.0, "token"),
    "input_tokens": (3_000_000.0, "token"),
    "energy_per_million_tokens": (0.6, "kWh/Mtok"),
    "carbon_per_million_tokens": (240.0, "gCO2e/Mtok"),
}


def _metrics(bundle: Path, out: Path) -> dict:
    cert = json.loads(Path(certify(bundle, out)).read_text())
    return cert["metrics"]


def _assert_golden(metrics: dict) -> None:
    for name, (value, unit) in EXPECTED.items():
        assert metrics[name]["unit"] == unit, name
        assert metrics[name]["value"] == pytest.approx(value, rel=1e-9), name


@pytest.mark.parametrize(
    ("kind", "unit", "ext"),
    [
        ("gauge", "W", "csv"),
        ("gauge", "kW", "csv"),
        ("gauge", "W", "parquet"),
        ("counter", "mJ", "csv"),
        ("counter", "J", "parquet"),
        ("counter", "kWh", "csv"),
    ],
)
def test_golden_case_in_every_unit(tmp_path: Path, kind: str, unit: str, ext: str) -> None:
    bundle = write_golden_bundle(tmp_path / "b", power_unit=unit, kind=kind, ext=ext)
    _assert_golden(_metrics(bundle, tmp_path / "out"))


def test_token_counter_reset_neither_loses_nor_doubles(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b", token_reset=True)
    _assert_golden(_metrics(bundle, tmp_path / "out"))


def test_same_bundle_gives_byte_identical_certificate(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    first = Path(certify(bundle, tmp_path / "out1")).read_bytes()
    second = Path(certify(bundle, tmp_path / "out2")).read_bytes()
    assert first == second


def test_certificate_has_the_documented_keys(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    path = Path(certify(bundle, tmp_path / "out"))
    cert = json.loads(path.read_text())
    for key in ("certificate_id", "scheme", "scope", "period", "metrics", "grade", "data_quality", "inputs"):
        assert key in cert
    assert cert["scheme"]["id"] and cert["scheme"]["version"]
    assert cert["period"] == {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}
    assert cert["data_quality"]["coverage"] == pytest.approx(1.0)
    assert cert["data_quality"]["validation_success"] is True
    assert {i["file"] for i in cert["inputs"]} == {"manifest.yaml", "power.csv", "tokens.csv"}
    # The HTML page and the validation result are published beside it.
    assert path.with_suffix(".html").is_file()
    assert path.with_name(path.stem + ".validation.json").is_file()

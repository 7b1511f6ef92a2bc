"""Grades at 95 % confidence (scheme 2026.2); scheme 2026.1 keeps grading the point value."""

from __future__ import annotations

import pytest

from greencert.grading import SCHEME_DIR, grade, load_scheme

# Size class <=20B: energy band upper edges A..F = 0.03, 0.06, 0.12, ... kWh/Mtok;
# carbon edges = energy edges x 300 gCO2e/kWh = 9, 18, 36, ... gCO2e/Mtok.
NEW = load_scheme(SCHEME_DIR / "greencert-2026.2.yaml")
OLD = load_scheme(SCHEME_DIR / "greencert-2026.1.yaml")
CARBON_B = (15.0, [14.0, 16.0])  # well inside band B


def test_interval_inside_the_band_keeps_the_grade() -> None:
    g = grade(0.05, CARBON_B[0], 8, NEW, [0.045, 0.055], CARBON_B[1])
    assert (g["energy"], g["carbon"], g["overall"]) == ("B", "B", "B")
    assert g["reasons"] == []
    assert g["confidence"]["level"] == 0.95
    assert g["confidence"]["point_grades"] == {"energy": "B", "carbon": "B"}


def test_interval_crossing_the_upper_edge_gives_the_lower_grade_and_says_why() -> None:
    g = grade(0.05, CARBON_B[0], 8, NEW, [0.045, 0.065], CARBON_B[1])
    assert g["energy"] == "C" and g["overall"] == "C"
    assert g["confidence"]["point_grades"]["energy"] == "B"
    (reason,) = g["reasons"]
    assert "energy" in reason and "band B" in reason and "0.065" in reason and "grade C" in reason


def test_interval_reaching_two_bands_down_gives_that_grade() -> None:
    g = grade(0.05, CARBON_B[0], 8, NEW, [0.04, 0.13], CARBON_B[1])
    assert g["energy"] == "D"


def test_top_grade_needs_an_interval_within_10_percent() -> None:
    # 0.025 kWh/Mtok is in A (<= 0.03); [0.02, 0.029] stays below 0.03 but reaches 20 % below the value.
    wide = grade(0.025, 5.0, 8, NEW, [0.02, 0.029], [4.9, 5.1])
    assert wide["energy"] == "B"
    assert "+-10%" in wide["reasons"][0] and "20.0%" in wide["reasons"][0]
    narrow = grade(0.025, 5.0, 8, NEW, [0.024, 0.0265], [4.9, 5.1])
    assert narrow["energy"] == "A" and narrow["overall"] == "A" and narrow["reasons"] == []


def test_carbon_interval_is_graded_too() -> None:
    g = grade(0.05, 17.0, 8, NEW, [0.045, 0.055], [16.0, 19.0])
    assert g["carbon"] == "C" and g["overall"] == "C"
    assert g["reasons"][0].startswith("carbon:")


def test_without_intervals_or_with_the_old_scheme_the_point_is_graded() -> None:
    assert grade(0.05, 15.0, 8, NEW)["energy"] == "B"
    old = grade(0.05, 15.0, 8, OLD, [0.045, 0.065], [14.0, 16.0])
    assert old["energy"] == "B"
    assert "confidence" not in old and "reasons" not in old


def test_default_scheme_is_2026_3() -> None:
    assert load_scheme().version == "2026.3"
    assert load_scheme().integrity is not None and OLD.integrity is None
    assert NEW.integrity.top_grade_max_relative_halfwidth == pytest.approx(0.10)


def test_certificates_of_every_scheme_verify(tmp_path) -> None:
    """Certificates issued under 2026.1 and 2026.2 still verify (recomputed with their own scheme), and
    2026.3 ones (the default) too."""
    import datetime as dt
    import json
    from pathlib import Path

    from greencert.certificate.verify import TrustOptions, verify_certificate
    from greencert.pipeline import certify
    from integrity_bundles import build

    bundle = build(tmp_path / "b", power_spec={"meter_class": "gpu_sensor"})
    old_path = Path(certify(bundle, tmp_path / "old", SCHEME_DIR / "greencert-2026.1.yaml", pdf=False))
    mid_path = Path(certify(bundle, tmp_path / "mid", SCHEME_DIR / "greencert-2026.2.yaml", pdf=False))
    new_path = Path(certify(bundle, tmp_path / "new", pdf=False))
    old, mid, new = (json.loads(p.read_text()) for p in (old_path, mid_path, new_path))
    assert [c["scheme"]["version"] for c in (old, mid, new)] == ["2026.1", "2026.2", "2026.3"]
    assert "interval95" not in old["metrics"]["energy_per_million_tokens"]
    assert old["metrics"]["it_energy"]["value"] == pytest.approx(0.5)  # GPU only under 2026.1
    assert mid["metrics"]["it_energy"]["value"] == pytest.approx(0.5 * 1.45)
    assert mid["grading"]["confidence"]["level"] == 0.95 and "confirmed_grade" not in mid
    # 2026.3: the same node parts, plus the estimated idle provisioned capacity (10/83 of IT, Google 2025)
    # in the facility energy (PUE 1.2 in these bundles).
    assert new["metrics"]["it_energy"]["value"] == pytest.approx(0.5 * 1.45)
    assert new["metrics"]["facility_energy"]["value"] == pytest.approx(0.5 * 1.45 * (1 + 10 / 83) * 1.2)
    assert new["grade"] == new["grading"]["efficiency"]["overall"]
    assert new["confirmed_grade"] == new["grading"]["confirmed"]["overall"]
    assert new["measurement_class"] == "gpu_only"
    for path in (old_path, mid_path, new_path):
        checked = verify_certificate(
            path, at=dt.datetime(2026, 2, 1, tzinfo=dt.UTC), options=TrustOptions(allow_development_key=True)
        )
        assert checked.lines[-1].startswith("recomputed figures: ok")

"""The scheme owns the rules (issue 13, item 5): tolerances come from the scheme, a manifest only tightens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_manifest
from greencert.bundle.manifest import parse_manifest
from greencert.bundle.reader import Series
from greencert.errors import BundleError
from greencert.grading import (
    DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU,
    SCHEME_DIR,
    check_manifest_tolerances,
    effective_max_device_power,
    effective_max_gap,
    gpu_count,
    is_superseded,
    latest_scheme_version,
    load_scheme,
    scheme_by_version,
)
from greencert.validation.profile import implausible_token_rate

SCHEME = load_scheme()


def _manifest(**power: object):
    return parse_manifest(
        make_manifest(power={"file": "power.csv", "kind": "gauge", "unit": "W", **power}), "m"
    )


def test_the_scheme_gap_applies_unless_the_manifest_is_tighter() -> None:
    assert SCHEME.max_gap_seconds == 120.0  # data_quality.max_gap: "120 s" in the shipped schemes
    assert effective_max_gap(_manifest().power, SCHEME) == 120.0
    assert effective_max_gap(_manifest(max_gap="30 s").power, SCHEME) == 30.0
    # Even without the refusal below, a looser value can never widen what is bridged.
    assert effective_max_gap(_manifest(max_gap="1 h").power, SCHEME) == 120.0


def test_the_scheme_power_ceiling_applies_to_the_graded_series_only() -> None:
    assert effective_max_device_power(_manifest().power, SCHEME) == 1500.0
    assert effective_max_device_power(_manifest(max_device_power="0.7 kW").power, SCHEME) == 700.0
    # A node meter is not bound by the per-GPU ceiling; it keeps the manifest's declared ceiling.
    node = _manifest(max_device_power="12 kW").power
    assert effective_max_device_power(node, SCHEME, graded_series=False) == 12_000.0
    assert effective_max_device_power(_manifest().power, SCHEME, graded_series=False) == float("inf")


@pytest.mark.parametrize(
    ("key", "value", "limit"),
    [("max_gap", "121 s", "max_gap 120 s"), ("max_gap", "1 h", "max_gap 120 s"),
     ("max_device_power", "1501 W", "max_device_power 1500 W"),
     ("max_device_power", "2 kW", "max_device_power 1500 W")],
)  # fmt: skip
def test_a_looser_manifest_value_is_an_error_naming_the_key_and_the_scheme_limit(
    key: str, value: str, limit: str
) -> None:
    with pytest.raises(BundleError) as err:
        check_manifest_tolerances(_manifest(**{key: value}), SCHEME, "b/manifest.yaml")
    assert f"power.{key} {value!r} is looser than" in err.value.problem
    assert limit in err.value.problem and SCHEME.version in err.value.problem
    assert err.value.where == "b/manifest.yaml"


@pytest.mark.parametrize(
    "power", [{}, {"max_gap": "120 s"}, {"max_gap": "15 s", "max_device_power": "700 W"}]
)
def test_equal_or_tighter_values_are_accepted(power: dict) -> None:
    check_manifest_tolerances(_manifest(**power), SCHEME, "m")


def test_a_meter_gap_looser_than_the_scheme_is_refused_too() -> None:
    data = make_manifest()
    data["meters"] = [
        {"name": "node", "layer": "node", "file": "n.csv", "kind": "gauge", "unit": "W", "max_gap": "10 min"}
    ]
    with pytest.raises(BundleError, match=r"meters\.node\.max_gap '10 min' is looser"):
        check_manifest_tolerances(parse_manifest(data, "m"), SCHEME, "m")


# ---------------------------------------------------------------- token counter plausibility


def _counter(t: list[float], v: list[float], instances: list[int] | None = None) -> Series:
    codes = np.array(instances or [0] * len(t), dtype=np.int32)
    names = [f"i{k}" for k in range(int(codes.max()) + 1)]
    return Series(
        "tokens.csv", np.array(t, float), codes, names, {"output_tokens": np.array(v, float)},
        np.arange(len(t)), "csv",
    )  # fmt: skip


def test_a_rise_at_the_ceiling_passes_and_just_above_fails() -> None:
    # 60 s steps, ceiling 1000 tokens/s: +60,000 is exactly the ceiling, +60,001 is above it.
    assert (
        implausible_token_rate(_counter([0, 60, 120], [0, 60_000, 120_000]), "output_tokens", 1000.0) is None
    )
    hit = implausible_token_rate(_counter([0, 60, 120], [0, 60_000, 120_001]), "output_tokens", 1000.0)
    assert hit is not None
    index, increase, step, rate = hit
    assert (index, increase, step) == (2, 60_001.0, 60.0)
    assert rate == pytest.approx(60_001 / 60)


def test_a_reset_counts_the_new_value_as_the_increase_like_prometheus() -> None:
    # 1e6 -> 5 is a reset (+5, plausible); 5 -> 1e9 in 60 s is +999,999,995 (16.7 M/s, implausible).
    assert implausible_token_rate(_counter([0, 60], [1e6, 5]), "output_tokens", 1000.0) is None
    hit = implausible_token_rate(_counter([0, 60, 120], [1e6, 5, 1e9]), "output_tokens", 1000.0)
    assert hit is not None and hit[0] == 2 and hit[1] == 1e9 - 5
    # A reset straight to an absurd value: the value itself is the increase.
    hit = implausible_token_rate(_counter([0, 60], [1e12, 1e11]), "output_tokens", 1000.0)
    assert hit is not None and hit[1] == 1e11


def test_steps_between_instances_and_jittered_samples_are_not_judged_as_rises() -> None:
    # Instance boundaries are not steps: i0 ends at 1e9, i1 starts at 0.
    s = _counter([0, 60, 0, 60], [1e9 - 1000, 1e9, 0, 1000], [0, 0, 1, 1])
    assert implausible_token_rate(s, "output_tokens", 1000.0) is None
    # Two samples 1 ms apart with +500 tokens: judged over 1 s (500/s), not as 500,000/s.
    assert implausible_token_rate(_counter([0, 0.001], [0, 500]), "output_tokens", 1000.0) is None


def test_gpu_count_comes_from_the_power_devices_and_a_declaration_cannot_exceed_what_they_hold() -> None:
    m = parse_manifest(make_manifest(), "m")
    assert gpu_count(m, 2) == 2
    declared = parse_manifest(make_manifest(scope={"gpu_count": 8}), "m")
    assert gpu_count(declared, 1) == 8  # one node meter, eight GPUs
    inflated = parse_manifest(make_manifest(scope={"gpu_count": 10_000}), "m")
    assert gpu_count(inflated, 2) == 16  # at most 8 GPUs per metered device


def test_the_token_rate_ceiling_is_a_scheme_key_with_a_code_default(tmp_path: Path) -> None:
    # ML.ENERGY v3: 9,806 tokens/s for Llama-3.1-8B on one H100; the default is about ten times that.
    assert 9_806 * 5 < DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU <= 9_806 * 20
    raw = yaml.safe_load(SCHEME.path.read_text(encoding="utf-8"))
    raw["data_quality"].pop("max_output_tokens_per_second_per_gpu", None)
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert (
        load_scheme(without).max_output_tokens_per_second_per_gpu
        == DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU
    )
    raw["data_quality"]["max_output_tokens_per_second_per_gpu"] = 20_000
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert load_scheme(stricter).max_output_tokens_per_second_per_gpu == 20_000.0


def test_old_schemes_still_load_and_the_latest_version_is_the_highest() -> None:
    versions = sorted(
        (yaml.safe_load(p.read_text(encoding="utf-8"))["version"] for p in SCHEME_DIR.glob("*.yaml")),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    assert {"2026.1", "2026.2"} <= set(versions)
    assert latest_scheme_version("greencert-inference") == versions[-1]
    assert scheme_by_version("greencert-inference", "2026.1").max_gap_seconds == 120.0
    assert is_superseded("greencert-inference", "2026.1")
    assert not is_superseded("greencert-inference", versions[-1])
    assert latest_scheme_version("no-such-scheme") is None


# ---------------------------------------------------------------- the threat, end to end


def test_one_absurd_token_sample_would_lift_the_grade_and_is_refused(tmp_path: Path) -> None:
    from corpus.bad_bundles import CASES, write_good_bundle
    from greencert.bundle.reader import open_bundle
    from greencert.compute.metrics import compute_figures
    from greencert.errors import ValidationFailed
    from greencert.grading import grade
    from greencert.validation.run import profile_bundle

    def point_grade(bundle_dir: Path) -> tuple[str, float]:
        fig = compute_figures(open_bundle(bundle_dir), SCHEME).metrics()
        energy = fig["energy_per_million_tokens"]["value"]
        return grade(energy, fig["carbon_per_million_tokens"]["value"], 8, SCHEME)["overall"], energy

    # The corpus's good bundle: 2 GPUs averaging exactly 450 W over the day (a sine over one full
    # period) = 21.6 kWh metered. Its power series declares no meter class, so scheme 2026.3 reads it
    # as GPU-only: x 1.45 node parts, x (1 + 10/83) estimated idle provisioned capacity, x PUE 1.2;
    # 400 tokens/s x 86,400 s = 34.56 Mtok -> 1.2185 kWh/Mtok, band F of the <=20B class (0.96 < x <= 1.92).
    write_good_bundle(tmp_path / "good")
    overall, energy = point_grade(tmp_path / "good")
    assert energy == pytest.approx(21.6 * 1.45 * (1 + 10 / 83) * 1.2 / 34.56, rel=1e-3)
    assert overall == "F"
    # One sample 10**12 higher: computed without the check, the day would count over 10**12 tokens,
    # about 42 kWh / 10**6 Mtok = 4.2e-5 kWh/Mtok, band A.
    CASES["token_counter_absurd_jump"].write(tmp_path / "absurd")
    overall, energy = point_grade(tmp_path / "absurd")
    assert overall == "A" and energy < 0.03
    # Validation refuses it before any figure is computed.
    with pytest.raises(ValidationFailed, match="implausible output token counter jump"):
        profile_bundle(open_bundle(tmp_path / "absurd"), SCHEME)
    profile_bundle(open_bundle(tmp_path / "good"), SCHEME)  # and the honest day passes the check

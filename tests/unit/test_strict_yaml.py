"""The strict YAML loader (greencert.yamlio): every YAML file of the package is read through it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from greencert.bundle.manifest import load_manifest
from greencert.config import load_config
from greencert.errors import BundleError, ConfigError, GreenCertError
from greencert.grading import load_scheme
from greencert.yamlio import MAX_DEPTH, parse_yaml


def test_a_duplicated_key_names_the_key_and_both_lines() -> None:
    text = "power:\n  file: power.csv\n  max_gap: 60 s\n  unit: W\n  max_gap: 1 h\n"
    with pytest.raises(ConfigError) as err:
        parse_yaml(text, "m.yaml")
    # The second max_gap is on line 5, column 3; the first on line 3.
    assert err.value.where == "m.yaml:5:3"
    assert "duplicate key 'max_gap'" in err.value.problem and "first at line 3 column 3" in err.value.problem


def test_a_duplicated_top_level_section_is_refused_in_flow_style_too() -> None:
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_yaml("{a: 1, b: 2, a: 3}\n", "f.yaml")


def test_merge_keys_may_be_overridden_without_being_duplicates() -> None:
    # '<<' merges are YAML's own override mechanism: an explicit key after a merge is not a duplicate.
    data = parse_yaml("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 5\n", "f.yaml")
    assert data["m"] == {"x": 5, "y": 2}


def test_same_key_in_different_mappings_is_fine() -> None:
    assert parse_yaml("a: {k: 1}\nb: {k: 2}\n", "f.yaml") == {"a": {"k": 1}, "b": {"k": 2}}


def test_nesting_just_within_the_limit_loads_and_one_more_level_fails() -> None:
    # MAX_DEPTH counts collections: the top mapping is level 1, so MAX_DEPTH - 1 nested lists fit.
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    parse_yaml(ok, "f.yaml")
    deep = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    with pytest.raises(ConfigError, match="maximum nesting depth"):
        parse_yaml(deep, "f.yaml")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [*a]\n", "recursive alias"),
        ("d: 2026-02-30\n", "day is out of range for month"),
        ("n: " + "1" * 5000 + "\n", "integer string conversion"),
        ("x: !!python/name:os.system\n", "could not determine a constructor"),
        ("? [a, b]\n: 1\n", "unhashable key"),
        ("a: [1, 2\n", "not valid YAML"),
    ],
)
def test_inputs_python_cannot_build_are_errors_with_a_line(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_yaml(text, "f.yaml")
    assert fragment in err.value.problem
    assert err.value.where.startswith("f.yaml:")


def test_aliases_that_expand_to_a_billion_values_are_refused_before_expansion() -> None:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 10)]
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_yaml("\n".join(lines) + "\n", "f.yaml")
    # Two levels (100 values) are an ordinary use of aliases.
    assert len(parse_yaml("\n".join(lines[:3]) + "\n", "f.yaml")["l2"]) == 10


def test_scheme_fleet_config_and_manifest_loaders_refuse_duplicates(tmp_path: Path) -> None:
    scheme_text = (Path(load_scheme().path)).read_text(encoding="utf-8")
    scheme = tmp_path / "scheme.yaml"
    scheme.write_text(scheme_text.replace("validity:\n", "validity:\n  months: 60\n", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate key 'months'"):
        load_scheme(scheme)

    config = tmp_path / "fleet.yaml"
    config.write_text("registry: r\nwork_dir: w\ndeployments: []\nregistry: elsewhere\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="duplicate key 'registry'") as err:
        load_config(config)
    assert err.value.where == f"{config}:4:1"

    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.yaml").write_text("scope: {}\nscope: {}\n", encoding="utf-8")
    with pytest.raises(BundleError, match="duplicate key 'scope'"):
        load_manifest(bundle)


def test_no_yaml_safe_load_is_left_in_the_package() -> None:
    # Every YAML load goes through greencert.yamlio (dumping is fine).
    root = Path(__file__).resolve().parents[2] / "plugins" / "greencert"
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "yamlio.py"
        and any(
            call in p.read_text(encoding="utf-8")
            for call in ("yaml.safe_load(", "yaml.load(", "yaml.full_load(")
        )
    ]
    assert offenders == []


# ---------------------------------------------------------------- fuzz: GreenCertError or success, nothing else

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(
        ["2026-01-01T00:00:00Z", "2026-13-45", "9999-12-31T23:59:59Z", "1 h", "inf W", "W", "../x"]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
_keys = st.sampled_from(
    ["scope", "period", "power", "tokens", "facility", "grid", "meters", "segments", "provenance"]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(_keys, _values, max_size=7), noise=st.text(max_size=30))
def test_fuzzed_manifests_end_in_a_greencert_error_or_a_manifest(
    tmp_path: Path, doc: dict, noise: str
) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True) + noise
    bundle = tmp_path / "fuzz"
    bundle.mkdir(exist_ok=True)
    (bundle / "manifest.yaml").write_text(text, encoding="utf-8")
    try:
        load_manifest(bundle)
    except GreenCertError as exc:
        assert exc.problem  # a message, and no other exception type escaped

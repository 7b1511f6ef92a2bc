"""certify_fleet_day: two processes, one result.

The fleet run reads bundles in two processes (whoever is free takes the next
bundle), validates all of them in one stacked GX run and publishes from both.
These tests check what that must not change: every certificate is the one the
per-bundle pipeline (``pipeline.certify``) issues for the same bundle and key;
a run where the helper read every bundle writes the same bytes as a run where
this process read them; a bundle that fails validation or cannot be read is
reported with its reason and gets nothing in the registry.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from greencert.fleet import FleetRun, certify_fleet_day
from greencert.fleet_day import deployment_bundles
from greencert.pipeline import certify
from greencert.sources.fleet import FleetSpec, write_fleet_day

pytestmark = pytest.mark.integration

DAY = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
SCHEME = Path(__file__).resolve().parents[2] / "plugins/greencert/schemes/greencert-2026.1.yaml"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 5-deployment fleet-day (100 nodes) and a signing key file."""
    root = tmp_path_factory.mktemp("fleet")
    folder = write_fleet_day(FleetSpec(scale=0.1), DAY, root / "bundles")
    key = root / "key.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key.chmod(0o600)
    return folder, key


def _files(root: Path) -> dict[str, bytes]:
    """Every published file but the registry-wide signed state, which carries its signing time."""
    from trust_helpers import is_registry_state

    return {
        rel: p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.name.startswith(".")
        and (not is_registry_state(rel := p.relative_to(root).as_posix()) or rel in ("index.json", "index.html"))
    }


def test_certificates_equal_the_per_bundle_pipeline_whoever_reads(
    fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    folder, key = fleet
    bundles = deployment_bundles(folder)
    assert len(bundles) == 5

    def run(tag: str, max_parent_bundles: int) -> FleetRun:
        out = tmp_path / tag
        return certify_fleet_day(
            bundles,
            out / "registry",
            out / "work",
            SCHEME,
            key,
            partials_dir=out / "partials",
            max_parent_bundles=max_parent_bundles,
        )

    # The helper reads every bundle in one run, this process every bundle in the other.
    by_helper, by_parent = run("a", 0), run("b", 5)
    assert by_helper.read_by_helper == 5 and by_parent.read_by_helper == 0
    assert not by_helper.failures and not by_parent.failures
    assert len(by_helper.certificates) == len(by_parent.certificates) == 5
    # Same bytes everywhere: certificates, signatures, stacked validation reports, labels, index.
    files_a, files_b = _files(tmp_path / "a" / "registry"), _files(tmp_path / "b" / "registry")
    assert files_a.keys() == files_b.keys()
    # The index alone records a wall-clock time (when certificate status was evaluated).
    # So does the signed status it was checked against (TUF timestamp expiry).
    index_a, index_b = (json.loads(f.pop("index.json")) for f in (files_a, files_b))
    assert index_a.pop("status_at") and index_b.pop("status_at")
    assert index_a["trust"].pop("status_expires") and index_b["trust"].pop("status_expires")
    assert index_a == index_b
    assert {r["verification"] for r in index_a["certificates"]} == {"ok"}
    del files_a["index.html"], files_b["index.html"]
    assert [name for name in files_a if files_a[name] != files_b[name]] == []
    assert by_helper.device_energy_kwh == by_parent.device_energy_kwh
    # The daily partials too (the parent's were serialised while the helper validated).
    partials_a, partials_b = _files(tmp_path / "a" / "partials"), _files(tmp_path / "b" / "partials")
    assert len(partials_a) == 5 and partials_a == partials_b
    # And each certificate is the one the per-bundle stages issue for that bundle.
    for bundle in bundles[:2]:
        alone = Path(
            certify(bundle, tmp_path / "alone", SCHEME, tmp_path / "work-alone" / bundle.name, key, False)
        )
        fleet_cert = Path(by_helper.certificates[bundle.name])
        assert fleet_cert.read_bytes() == alone.read_bytes()
        assert (
            fleet_cert.with_name(fleet_cert.name + ".sig").read_bytes()
            == alone.with_name(alone.name + ".sig").read_bytes()
        )


def _make_one_power_sample_negative(bundle: Path) -> None:
    path = bundle / "power.parquet"
    table = pq.read_table(path)
    values = table.column("value").to_numpy().copy()
    values[1234] = -5.0
    table = table.set_column(table.schema.get_field_index("value"), "value", pa.array(values, pa.float64()))
    pq.write_table(table, path)


def test_bad_bundles_are_reported_and_get_nothing(fleet: tuple[Path, Path], tmp_path: Path) -> None:
    folder, key = fleet
    copy = tmp_path / "day"
    shutil.copytree(folder, copy)
    bundles = deployment_bundles(copy)
    invalid, unreadable = bundles[1], bundles[3]
    _make_one_power_sample_negative(invalid)
    (unreadable / "manifest.yaml").unlink()
    registry = tmp_path / "registry"
    # Two bundles each: whichever process read a bad bundle, the outcome is the same.
    run = certify_fleet_day(bundles, registry, tmp_path / "work", SCHEME, key, max_parent_bundles=2)
    good = {b.name for b in bundles} - {invalid.name, unreadable.name}
    assert set(run.certificates) == good
    assert set(run.failures) == {invalid.name, unreadable.name}
    # The stacked run did not pass the invalid bundle; validated alone, the report names the rule.
    assert "critical expectation" in run.failures[invalid.name]
    assert "power" in run.failures[invalid.name]
    assert "manifest" in run.failures[unreadable.name]
    published = {p.name for p in registry.rglob("*.json") if p.parent.name in (invalid.name, unreadable.name)}
    assert published == set()
    failed_report = tmp_path / "work" / invalid.name / "validation.failed.json"
    assert failed_report.is_file() and not (tmp_path / "work" / invalid.name / "validation.json").exists()
    assert np.isfinite(list(run.device_energy_kwh.values())).all()


def test_a_preparation_only_publishes_the_figures_and_key_it_was_made_for(
    fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    from greencert.certificate.issue import prepare_certificate, publish_certificate
    from greencert.errors import PublishError
    from greencert.pipeline import compute_stage, grade_stage, validate_stage

    folder, key = fleet
    bundle = deployment_bundles(folder)[0]
    work = tmp_path / "work"
    work.mkdir()
    validation = validate_stage(bundle, work, SCHEME)
    graded = json.loads(
        Path(grade_stage(compute_stage(bundle, validation, work, SCHEME), work, SCHEME)).read_text()
    )
    report = Path(validation).read_bytes()
    prepared = prepare_certificate(graded, key, False)
    registry = tmp_path / "registry"

    other_figures = json.loads(json.dumps(graded))
    other_figures["metrics"]["energy_per_million_tokens"]["value"] *= 0.5
    other_key = tmp_path / "other.pem"
    other_key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    other_key.chmod(0o600)
    for figures, signer in ((other_figures, key), (graded, other_key)):
        with pytest.raises(PublishError, match="prepared certificate does not match"):
            publish_certificate(figures, bundle, report, registry, signer, False, prepared=prepared)
    assert not list(registry.rglob("*.json"))
    # With its own figures and key it publishes the same bytes as an unprepared publication.
    with_prep = Path(publish_certificate(graded, bundle, report, registry, key, False, prepared=prepared))
    without = Path(publish_certificate(graded, bundle, report, tmp_path / "registry2", key, False))
    assert with_prep.read_bytes() == without.read_bytes()
    assert with_prep.with_suffix(".html").read_bytes() == without.with_suffix(".html").read_bytes()

"""certify_fleet_day: a process pool, one result.

The fleet run cuts the day's bundles into chunks and a standard process pool
hands each chunk to a free worker, which reads its bundles, validates them in
one stacked GX run and publishes them. These tests check what that must not
change: every certificate is the one the per-bundle pipeline
(``pipeline.certify``) issues for the same bundle and key; every published
byte is the same whatever the number of workers and the chunks (a bundle's
report must not depend on which bundles shared its stack); a bundle that
fails validation or cannot be read is reported with its reason and gets
nothing in the registry.
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


def _run(bundles: list[Path], out: Path, key: Path, workers: int, chunk_size: int) -> FleetRun:
    return certify_fleet_day(
        bundles,
        out / "registry",
        out / "work",
        SCHEME,
        key,
        partials_dir=out / "partials",
        workers=workers,
        chunk_size=chunk_size,
    )


def _without_signed_state(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files, the index checked apart: it alone records wall-clock times."""
    index = json.loads(files.pop("index.json"))
    # When certificate status was evaluated, and the signed status it was checked against
    # (TUF timestamp expiry).
    assert index.pop("status_at")
    assert index["trust"].pop("status_expires")
    del files["index.html"]
    files["index.json"] = json.dumps(index, sort_keys=True).encode()
    return files


def test_published_bytes_do_not_depend_on_workers_or_chunks(fleet: tuple[Path, Path], tmp_path: Path) -> None:
    folder, key = fleet
    bundles = deployment_bundles(folder)
    assert len(bundles) == 5
    # One worker with every bundle in one stack; two workers with stacks of two (2+2+1) and of one.
    layouts = {"one-stack": (1, 5), "pairs": (2, 2), "singles": (2, 1)}
    runs = {tag: _run(bundles, tmp_path / tag, key, w, c) for tag, (w, c) in layouts.items()}
    assert {tag: (r.workers, r.chunks) for tag, r in runs.items()} == {
        "one-stack": (1, 1),
        "pairs": (2, 3),
        "singles": (2, 5),
    }
    for r in runs.values():
        assert not r.failures
        assert len(r.certificates) == len(r.partials) == 5
        assert sum(r.worker_peak_kb.values()) > 0
    # Same bytes everywhere: certificates, signatures, validation reports, labels, index.
    registries = {tag: _without_signed_state(_files(tmp_path / tag / "registry")) for tag in runs}
    reference = registries.pop("one-stack")
    assert len([name for name in reference if name.endswith(".sig")]) >= 5
    for tag, files in registries.items():
        assert files.keys() == reference.keys(), tag
        assert [name for name in reference if files[name] != reference[name]] == [], tag
    index = json.loads(reference["index.json"])
    assert {r["verification"] for r in index["certificates"]} == {"ok"}
    # The work folders' validation reports and the daily partials too.
    for tag in registries:
        for bundle in bundles:
            report = f"work/{bundle.name}/validation.json"
            assert (tmp_path / tag / report).read_bytes() == (tmp_path / "one-stack" / report).read_bytes()
        assert _files(tmp_path / tag / "partials") == _files(tmp_path / "one-stack" / "partials")
    energies = [r.device_energy_kwh for r in runs.values()]
    assert len(energies[0]) == 100 * 8 and energies[1:] == [energies[0]] * 2


def test_certificates_equal_the_per_bundle_pipeline(fleet: tuple[Path, Path], tmp_path: Path) -> None:
    folder, key = fleet
    bundles = deployment_bundles(folder)
    run = _run(bundles, tmp_path / "fleet", key, 2, 2)
    assert not run.failures and len(run.certificates) == 5
    # Each certificate is the one the per-bundle stages issue for that bundle.
    for bundle in bundles[:2]:
        alone = Path(
            certify(bundle, tmp_path / "alone", SCHEME, tmp_path / "work-alone" / bundle.name, key, False)
        )
        fleet_cert = Path(run.certificates[bundle.name])
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
    # Stacks of two: each bad bundle shares its stack with a good one (0+1, 2+3), which still passes.
    run = certify_fleet_day(bundles, registry, tmp_path / "work", SCHEME, key, workers=2, chunk_size=2)
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

"""Evidence hygiene (issue 13, item 6) and inputs that once ended in a traceback (item 7)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import write_golden_bundle
from greencert.bundle.manifest import bundle_file, load_manifest
from greencert.bundle.reader import POWER_COLUMNS, TOKEN_COLUMNS, open_bundle, read_series
from greencert.certificate.build import certificate_id
from greencert.errors import BundleError
from greencert.names import RESERVED_NAMES, check_identifier, check_site

SECRET = "OTHER-TENANT-SECRET"

# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "value", ["dc-1\n", "dc-1\r\n", "\ndc-1", "dc 1", "", "-dc", "a" * 65, "a..b", "a/b"]
)
def test_identifiers_match_whole_strings_only(value: str) -> None:
    with pytest.raises(ValueError, match="not a safe identifier"):
        check_identifier(value, "scope.deployment")


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_registry_file_names_are_refused_as_sites_and_deployments(name: str) -> None:
    for spelled in (name, name.upper()):
        with pytest.raises(ValueError, match="name of a registry file or folder"):
            check_identifier(spelled, "scope.deployment")
        with pytest.raises(ValueError):
            check_site(spelled)


def test_the_reserved_list_is_the_one_of_issue_13() -> None:
    assert {
        "index.json", "index.html", "issuer.pem", "keys", "revocations.json", "revocations.json.sig",
        "metadata", "log", "trust",
    } <= RESERVED_NAMES  # fmt: skip


def test_a_site_has_no_dot_so_ids_cannot_collide() -> None:
    with pytest.raises(ValueError, match="not a safe site name"):
        check_site("a.b")
    # The collision of the issue: site a.b + deployment c against site a + deployment b.c.
    start, end = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    assert certificate_id("a", "b.c", start, end) == "a.b.c.20260101T0000Z-20260102T0000Z"
    assert check_site("a") and check_identifier("b.c", "d")


_site = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,10}", fullmatch=True)
_deployment = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True).filter(
    lambda s: ".." not in s
)


@given(site=_site, deployment=_deployment, hours=st.integers(1, 10_000))
def test_a_certificate_id_splits_back_into_its_site_deployment_and_period(
    site: str, deployment: str, hours: int
) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cid = certificate_id(site, deployment, start, start + dt.timedelta(hours=hours))
    first, last = cid.index("."), cid.rindex(".")
    assert (cid[:first], cid[first + 1 : last]) == (site, deployment)
    assert "/" not in cid and not cid.startswith(".")


# ---------------------------------------------------------------- links and special files


def test_a_symlinked_series_file_is_refused_without_reading_its_target(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    outside = tmp_path / "other-tenant.csv"
    # A header that is not comma-separated: the header probe would quote it if it read the file.
    outside.write_text(f"timestamp;device;value;{SECRET}\n1;gpu0;1\n", encoding="utf-8")
    (bundle / "power.csv").unlink()
    (bundle / "power.csv").symlink_to(outside)
    with pytest.raises(BundleError) as err:
        open_bundle(bundle)
    assert "power file is a symbolic link" in err.value.problem
    assert err.value.where == str(bundle / "power.csv")
    assert SECRET not in str(err.value) and str(outside) not in str(err.value)


def test_a_symlink_pointing_inside_the_bundle_is_refused_too(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    (bundle / "tokens.csv").rename(bundle / "real.csv")
    (bundle / "tokens.csv").symlink_to("real.csv")
    with pytest.raises(BundleError, match="tokens file is a symbolic link"):
        open_bundle(bundle)


def test_a_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    outside = tmp_path / "m.yaml"
    outside.write_text((bundle / "manifest.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (bundle / "manifest.yaml").unlink()
    (bundle / "manifest.yaml").symlink_to(outside)
    with pytest.raises(BundleError, match="manifest file is a symbolic link"):
        load_manifest(bundle)


def test_a_fifo_is_refused_before_anything_opens_it(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    (bundle / "tokens.csv").unlink()
    os.mkfifo(bundle / "tokens.csv")  # opening it for reading would block forever
    with pytest.raises(BundleError, match="not a regular file"):
        read_series(bundle / "tokens.csv", TOKEN_COLUMNS, what="tokens")


def test_the_bundle_folder_itself_may_be_reached_through_a_link(tmp_path: Path) -> None:
    # Operators link day folders; only the files inside must be the bundle's own.
    bundle = write_golden_bundle(tmp_path / "b")
    (tmp_path / "today").symlink_to(bundle)
    assert bundle_file(tmp_path / "today", "power.csv", "power") == tmp_path / "today" / "power.csv"
    assert open_bundle(tmp_path / "today").power.n_rows > 0


# ---------------------------------------------------------------- numbers a float64 cannot hold


def _parquet_power(path: Path, values: pa.Array) -> None:
    t = pa.array(np.arange(values.__len__(), dtype=np.int64) * 1_000_000 + 1_767_225_600_000_000).cast(
        pa.timestamp("us", tz="UTC")
    )
    pq.write_table(
        pa.table({"timestamp": t, "device": pa.array(["gpu0"] * len(values)), "value": values}), path
    )


@pytest.mark.parametrize(
    ("values", "row"),
    [(pa.array([1, 2, 2**64 - 1], pa.uint64()), 2), (pa.array([2**53 + 1, 1], pa.int64()), 0),
     (pa.array([1, -(2**63)], pa.int64()), 1)],
)  # fmt: skip
def test_integers_beyond_2_53_are_refused_naming_the_row(tmp_path: Path, values: pa.Array, row: int) -> None:
    path = tmp_path / "power.parquet"
    _parquet_power(path, values)
    with pytest.raises(BundleError) as err:
        read_series(path, POWER_COLUMNS, (), ("value",), "device", "power")
    assert "beyond 2**53" in err.value.problem
    assert err.value.where == f"{path} row {row} column value"


def test_integers_up_to_2_53_are_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "power.parquet"
    _parquet_power(path, pa.array([0, 2**53], pa.uint64()))
    series = read_series(path, POWER_COLUMNS, (), ("value",), "device", "power")
    assert series.values["value"].tolist() == [0.0, float(2**53)]


# ---------------------------------------------------------------- --out that cannot be written


def _certify(bundle: Path, out: str) -> tuple[int, str]:
    from greencert.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["certify", str(bundle), "--out", out])
    return code, err.getvalue()


def test_out_below_a_regular_file_is_a_publish_error_before_any_work(tmp_path: Path) -> None:
    bundle = write_golden_bundle(tmp_path / "b")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    code, message = _certify(bundle, str(tmp_path / "file" / "registry"))
    assert code == 5  # PublishError (errors.py)
    assert "registry folder cannot be written" in message and str(tmp_path / "file") in message
    assert "Traceback" not in message
    assert (tmp_path / "file").read_text(encoding="utf-8") == "x"


def test_out_on_a_file_system_that_refuses_writes_is_a_publish_error(tmp_path: Path) -> None:
    # sysfs refuses new files even to root (a read-only mount needs privileges a test does not have).
    bundle = write_golden_bundle(tmp_path / "b")
    code, message = _certify(bundle, "/sys/greencert-registry")
    assert code == 5
    assert "registry folder cannot be written" in message and "/sys/greencert-registry" in message
    assert not Path("/sys/greencert-registry").exists()


def test_prometheus_metric_and_label_names_match_whole_strings() -> None:
    # A metric name goes into a PromQL query: 'name\n' must not pass as 'name'.
    from pydantic import ValidationError

    from greencert.sources.profiles import Selector

    assert Selector(metric="DCGM_FI_DEV_POWER_USAGE").metric == "DCGM_FI_DEV_POWER_USAGE"
    with pytest.raises(ValidationError, match="is not a Prometheus metric name"):
        Selector(metric="DCGM_FI_DEV_POWER_USAGE\n")

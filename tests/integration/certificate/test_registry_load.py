"""Eight publishers and two readers on one registry, local and on S3 (moto on 127.0.0.1), with and
without SIGKILLs: nothing lost, nothing twice, no reader ever sees a row that does not verify.

The code is benchmarks/registry_load.py (which reports the figures for 500 certificates); here
it runs with 16 certificates (8 separate publisher processes x 2), enough for every publisher to
race the others for the registry lock (local) or for each metadata version (S3, compare-and-swap
on ``timestamp.json``, the log entries and the tree head). Readers list the registry (every row
checked against the signed metadata) and check one random certificate as ``verify`` does (fresh
signed status of its exact bytes, log inclusion proof, evidence hashes) in a loop until the
publishers are done. Each killed publisher is restarted on what it had not reported done (a rerun).

What must hold afterwards: each certificate exactly once as a file, in the signed targets, as an
issuance-log entry (each inclusion proof valid) and in the index; zero reader errors, zero
publisher tracebacks; no hidden temporaries left in a local registry.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import registry_load as load  # noqa: E402

pytestmark = pytest.mark.integration

PUBLISHERS = 8
CERTIFICATES = 16


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("load-stages")
    return {
        "key": load.write_key(root / "issuer.key"),
        "stages": load.make_stages(root / "inputs", CERTIFICATES),
    }


@pytest.fixture(scope="module")
def s3() -> load.MotoS3:
    server = load.MotoS3(bucket="load")
    yield server
    server.stop()


def _assert_held(result: dict, checks: dict, kills: int) -> None:
    assert result["publisher_errors"] == []
    assert len(result["readers"]) == 2
    for reader in result["readers"]:
        assert reader["errors"] == [], reader["errors"]
        assert reader["iterations"] >= 1
    assert result["kills"] == kills
    assert result["published"] == CERTIFICATES
    assert checks == {
        "expected": CERTIFICATES,
        "files_exactly_once": True,
        "listed_exactly_once": True,
        "all_verified": True,
        "targets_exactly_once": True,
        "log_issue_entries_exactly_once": True,
        "index_exactly_once": True,
        "index_all_verified": True,
        "bad_inclusion_proofs": 0,
        "hidden_leftovers": [],
    }
    print(load.summarise(result))  # figures of this run (not asserted; see the benchmark)


@pytest.mark.parametrize("kills", [0, 3], ids=["no-kills", "three-sigkills"])
def test_local_registry_under_load(stages: dict, tmp_path: Path, kills: int) -> None:
    registry = str(tmp_path / "registry")
    result = load.run_load(
        registry, stages["stages"], stages["key"], publishers=PUBLISHERS, readers=2, kills=kills, seed=kills
    )
    _assert_held(result, load.check_registry(registry, stages["stages"], stages["key"]), kills)


@pytest.mark.parametrize("kills", [0, 3], ids=["no-kills", "three-sigkills"])
def test_s3_registry_under_load(stages: dict, s3: load.MotoS3, kills: int) -> None:
    registry = f"s3://{s3.bucket}/registry-{kills}"
    result = load.run_load(
        registry,
        stages["stages"],
        stages["key"],
        publishers=PUBLISHERS,
        readers=2,
        kills=kills,
        seed=kills,
        env=s3.env,
    )
    _assert_held(result, load.check_registry(registry, stages["stages"], stages["key"]), kills)

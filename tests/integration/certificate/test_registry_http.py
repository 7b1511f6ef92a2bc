"""A registry folder served over HTTP (Python's http.server on 127.0.0.1), read while it is written.

Auditors and the label's links read the registry from a web server, not its folder. Here four
publisher processes publish into the folder while two readers, over HTTP only, list it (rows
named by the signed targets: a web server need not list folders) and check a random certificate
as ``verify`` does (fresh signed status of its exact bytes, inclusion proof, evidence hashes):
no reader ever sees a row that does not verify. Then ``greencert registry list URL`` and
``greencert verify CERT --registry URL`` read it through the CLI.
"""

from __future__ import annotations

import functools
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Generator
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import registry_load as load  # noqa: E402

pytestmark = pytest.mark.integration
GREENCERT = [sys.executable, "-c", "import sys; from greencert.cli import main; sys.exit(main(sys.argv[1:]))"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass


@pytest.fixture()
def served(tmp_path: Path) -> Generator[tuple[Path, str], None, None]:
    folder = tmp_path / "registry"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("http-stages")
    return {"key": load.write_key(root / "issuer.key"), "stages": load.make_stages(root / "inputs", 8)}


def test_readers_over_http_never_see_a_gap_while_publishers_write(
    served: tuple[Path, str], stages: dict, tmp_path: Path
) -> None:
    folder, url = served
    result = load.run_load(
        str(folder), stages["stages"], stages["key"], publishers=4, readers=2, reader_registry=url
    )
    assert result["publisher_errors"] == []
    for reader in result["readers"]:
        assert reader["errors"] == [], reader["errors"]
        assert reader["iterations"] >= 1
    checks = load.check_registry(str(folder), stages["stages"], stages["key"])
    assert all(
        v is True
        for k, v in checks.items()
        if k not in ("expected", "bad_inclusion_proofs", "hidden_leftovers")
    )
    assert checks["bad_inclusion_proofs"] == 0 and checks["hidden_leftovers"] == []
    # The same registry through the CLI, over HTTP only.
    at = load.AT.strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {**load._env(), "GREENCERT_HOME": str(tmp_path / "auditor")}
    listing = subprocess.run(
        [*GREENCERT, "registry", "list", url, "--json", "--at", at, "--key", f"{stages['key']}.pub"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr[-3000:]
    rows = json.loads(listing.stdout)
    assert sorted(r["certificate_id"] for r in rows) == sorted(s["id"] for s in stages["stages"])
    assert {r["verification"] for r in rows} == {"ok"}
    stage = stages["stages"][0]
    cert = next(folder / r["paths"]["json"] for r in rows if r["certificate_id"] == stage["id"])
    verify = subprocess.run(
        [*GREENCERT, "verify", str(cert), "--registry", url, "--key", f"{stages['key']}.pub", "--at", at],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr[-3000:]
    assert "status: issued, not revoked" in verify.stdout
    assert "Traceback" not in listing.stderr + verify.stderr

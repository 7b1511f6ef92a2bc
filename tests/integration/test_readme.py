"""The README's commands, run as written (issue 18): a README path that works on the day it is read.

Every ```bash block of README.md runs, in file order, each in a fresh ``bash`` (``set -eo pipefail``
first, so any failing command fails the block), in a copy of the working tree (tracked and
untracked, not ignored, files; the repository's ``.venv`` linked in) with its own empty ``HOME`` and
an environment without any ``AIRFLOW_*``, ``GREENCERT_*`` or ``PYTHONPATH`` setting, and without the
venv on ``PATH``: what ``eval "$(./dev env)"`` does not set, the blocks do not get.

A block is not run only when the line just before its opening fence is
``<!-- readme-test: skip (reason) -->`` (the README's "Tests" section says so); a marker without a
reason, or one that is not followed by a bash block, fails the test.

Expected outputs come from elsewhere than the output: the sample fleet's deployments from
``dags/config/sample_fleet.yaml``, the day from the clock the block itself uses (``date -u -d
yesterday``), the certificate id from its documented format, the development-key status from this
test's setup (a fresh HOME and no production key), the exports from ``dev``'s own ``airflow_env``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SKIP = re.compile(r"^<!-- readme-test: skip(?: \((?P<reason>[^)]*)\))? -->$")
FENCE = re.compile(r"^```(?P<lang>\S*)\s*$")
BLOCK_TIMEOUT = 1200  # seconds; ./dev demo on a loaded 2-core machine takes a few minutes

pytestmark = pytest.mark.integration


def readme_blocks(text: str) -> list[dict]:
    """Every fenced bash block: its heading, code, and skip reason (None = run it)."""
    blocks, heading, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        fence = FENCE.match(line)
        if fence:
            opening, body = i, []
            i += 1
            while not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if fence["lang"] == "bash":
                marker = SKIP.match(lines[opening - 1]) if opening else None
                blocks.append(
                    {
                        "heading": heading,
                        "code": "\n".join(body) + "\n",
                        "skip": (marker["reason"] or "") if marker else None,
                    }
                )
        i += 1
    return blocks


def test_skip_markers_have_reasons_and_precede_bash_blocks() -> None:
    lines = README.read_text().splitlines()
    for n, line in enumerate(lines):
        if line.startswith("<!-- readme-test"):
            marker = SKIP.match(line)
            assert marker and marker["reason"], f"README.md line {n + 1}: a skip marker needs a (reason)"
            assert lines[n + 1] == "```bash", f"README.md line {n + 1}: the marker must precede a bash block"
    blocks = readme_blocks(README.read_text())
    run = [b for b in blocks if b["skip"] is None]
    # The walkthrough, the demo and the plugin check are the user's path: they must stay runnable.
    assert {b["heading"] for b in run} >= {"Two commands", "Using it", "Opening the Airflow UI"}


def _venv_is_current() -> bool:
    """Whether .venv is installed from the current lock (as ./dev checks): else ./dev would reinstall
    into the linked venv, with the editable install pointing at the temporary copy."""
    digest = hashlib.sha256()
    for name in ("requirements.lock", "pyproject.toml"):
        data = (REPO / name).read_bytes()
        digest.update(f"{hashlib.sha256(data).hexdigest()}  {name}\n".encode())
    return (REPO / ".venv" / f".lock-{digest.hexdigest()[:16]}").exists()


def _copy_tree(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the working tree
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / ".venv").symlink_to(REPO / ".venv")


def _clean_env(home: Path) -> dict[str, str]:
    venv_bin = str(REPO / ".venv" / "bin")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "GREENCERT_", "PYTEST", "GX_"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["HOME"] = str(home)
    env.pop("XDG_DATA_HOME", None)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    assert _venv_is_current(), "the venv is older than requirements.lock/pyproject.toml: run ./dev env first"
    root = tmp_path_factory.mktemp("readme")
    work, home = root / "work", root / "home"
    work.mkdir()
    home.mkdir()
    _copy_tree(work)
    env = _clean_env(home)
    # The day the walkthrough's own `date -u -d yesterday` gives (read before and after: a run
    # across midnight UTC is recognised, not failed).
    before = dt.datetime.now(dt.UTC).date()
    results = []
    for block in readme_blocks(README.read_text()):
        if block["skip"] is not None:
            results.append((block, None))
            continue
        proc = subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + block["code"]],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        results.append((block, proc))
    after = dt.datetime.now(dt.UTC).date()
    return {"results": results, "work": work, "home": home, "days": {before, after}}


def _ran(runs: dict, heading: str) -> list[subprocess.CompletedProcess]:
    procs = [p for b, p in runs["results"] if b["heading"] == heading and p is not None]
    assert procs, f"no bash block ran under {heading!r}"
    return procs


def test_every_block_that_runs_exits_0(runs: dict) -> None:
    for block, proc in runs["results"]:
        if proc is None:
            continue
        assert proc.returncode == 0, (
            f"README block under {block['heading']!r} exited {proc.returncode}\n{block['code']}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stdout + proc.stderr, block["code"]


def test_demo_certifies_the_sample_fleet_and_says_whether_labels_are_pdf(runs: dict) -> None:
    (proc,) = _ran(runs, "Two commands")
    fleet = yaml.safe_load((REPO / "dags" / "config" / "sample_fleet.yaml").read_text())
    deployments = [d["deployment"] for d in fleet["deployments"]]
    out = proc.stdout
    for name in deployments:
        assert re.search(rf"^\S+\s+{re.escape(name)}\s", out, re.M), (name, out[-2000:])
    assert f"{len(deployments)} certificate(s)" in out
    registry = runs["work"] / "build" / "registry"
    certs = [p for p in registry.glob("*/*/*.json") if p.with_name(p.name + ".sig").exists()]
    pdfs = list(registry.glob("*/*/*.pdf"))
    assert len(certs) == len(deployments)
    chromium = any(shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "chrome"))
    if chromium:
        assert "labels: HTML and PDF" in out and len(pdfs) == len(certs), out[-2000:]
    else:  # the demo's own output says so (not only its log file)
        assert "labels: HTML only" in out and "Chromium" in out, out[-2000:]
    # A fresh HOME has no production key: the demo's certificates are shown as development-key ones.
    assert out.count("development key") >= len(deployments)


def test_walkthrough_certifies_a_recent_day_and_verify_passes(runs: dict) -> None:
    (proc,) = _ran(runs, "Using it")
    days = {d - dt.timedelta(days=1) for d in runs["days"]}
    ids = {f"dc-east-1.chat-8b.{d:%Y%m%d}T0000Z-{d + dt.timedelta(days=1):%Y%m%d}T0000Z" for d in days}
    out = proc.stdout
    assert any(f"OK: {cid} verified" in out for cid in ids), out[-3000:]
    assert "recomputed figures: ok" in out
    # verify and summary use the same word for this development-key certificate
    assert "status: development key" in out
    summary = [line for line in out.splitlines() if line.startswith("dc-east-1 ") and "chat-8b" in line]
    assert len(summary) == 1 and summary[0].rstrip().endswith("development key"), out[-2000:]
    assert any(f"{d:%Y-%m-%d}" in summary[0] for d in days)
    assert "<=20B" in summary[0]  # Llama-3.1-8B: 8 B active parameters, the <=20B size class
    assert "expired" not in out


def test_airflow_loads_the_plugin_after_dev_env(runs: dict) -> None:
    procs = _ran(runs, "Opening the Airflow UI")
    assert any("greencert_ui_plugin.py" in p.stdout for p in procs), [p.stdout[-2000:] for p in procs]


def test_dev_env_exports_every_setting_the_demo_uses(runs: dict) -> None:
    """Every variable ``airflow_env`` exports for the demo is printed by ``./dev env``, ready to eval."""
    source = (REPO / "dev").read_text()
    body = source[source.index("airflow_env() {") : source.index("\n}\n", source.index("airflow_env() {"))]
    names = set(re.findall(r"^\s*export ([A-Z0-9_]+)=", body, re.M))
    assert {"AIRFLOW__CORE__PLUGINS_FOLDER", "AIRFLOW__CORE__DAGS_FOLDER"} <= names
    proc = subprocess.run(
        ["./dev", "env"],
        cwd=runs["work"],
        env=_clean_env(runs["home"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    printed = dict(re.findall(r'^export ([A-Z0-9_]+)="(.*)"$', proc.stdout, re.M))
    assert names <= set(printed), names - set(printed)
    assert printed["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(runs["work"] / "plugins")
    # and a fresh shell that evals it gets them
    check = subprocess.run(
        ["bash", "-c", 'eval "$(./dev env)"; echo "$AIRFLOW__CORE__PLUGINS_FOLDER"'],
        cwd=runs["work"],
        env=_clean_env(runs["home"]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.stdout.strip() == str(runs["work"] / "plugins")

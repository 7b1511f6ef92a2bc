"""The CLI talks (issue 18): progress on a terminal and silence elsewhere, certify-fleet's closing
summary with grades, and one status vocabulary in summary, registry list, verify, index.json and
index.html, with the size class.

Run as the user runs it: the installed console script in subprocesses, a pseudo-terminal where a
terminal is needed. Every moment is explicit (``--at``); expected grades and counts are read from
the published certificate files, statuses follow from what the test did (a development key in a
fresh HOME, a newer day published, a revocation, a later ``--at``), size classes from the sample
fleet's active parameters and the scheme's class limits.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GREENCERT = str(REPO / ".venv" / "bin" / "greencert")
DAY1, DAY2 = "2026-01-01", "2026-01-02"
INSIDE = "2026-01-10T00:00:00Z"  # both certificates current
LATER = "2026-09-01T00:00:00Z"  # both expired (6 months after their periods)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENCERT_")}
    env.update(HOME=str(home), TERM="xterm-256color", COLUMNS="120")
    return env


def run(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GREENCERT, *args], capture_output=True, text=True, env=_env(home), cwd=cwd, timeout=900
    )


def run_on_terminal(home: Path, *args: str) -> tuple[int, str, str]:
    """stderr on a pseudo-terminal (as in an interactive shell), stdout a pipe."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [GREENCERT, *args], stdout=subprocess.PIPE, stderr=slave, env=_env(home), text=True
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read()
    code = proc.wait(timeout=900)
    os.close(master)
    return code, out, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("cli-talks")
    home = root / "home"
    home.mkdir()
    bundles = root / "bundles"
    sim = run(home, "simulate", "--out", str(bundles), "--date", DAY1, "--days", "2")
    assert sim.returncode == 0, sim.stderr
    return {"root": root, "home": home, "bundles": bundles}


def test_certify_shows_progress_on_a_terminal_only(world: dict) -> None:
    home, bundles, root = world["home"], world["bundles"], world["root"]
    code, out, err = run_on_terminal(
        home, "certify", str(bundles / "chat-8b" / DAY1), "--registry", str(root / "tty-reg"), "--no-pdf"
    )
    assert code == 0, err[-2000:]
    plain = ANSI.sub("", err)
    assert f"certifying chat-8b/{DAY1}: validating" in plain
    # the bar counts the four stages (a stage shorter than a refresh may not be drawn on its own)
    assert "0/4" in plain and "4/4" in plain and f"certifying chat-8b/{DAY1}: published" in plain
    assert out.strip().endswith(".json")  # results stay on stdout
    # the same command with stderr a pipe draws nothing
    piped = run(
        home, "certify", str(bundles / "chat-8b" / DAY2), "--registry", str(root / "pipe-reg"), "--no-pdf"
    )
    assert piped.returncode == 0, piped.stderr
    assert "certifying" not in piped.stderr and "\x1b[" not in piped.stderr and "/4" not in piped.stderr
    # what it says there is a note or a warning line, whole (no bar redrawn over it)
    assert all(line.startswith(("note: ", "warning: ")) for line in piped.stderr.splitlines()), piped.stderr


def test_one_status_everywhere_with_size_class(world: dict) -> None:
    home, bundles, root = world["home"], world["bundles"], world["root"]
    reg = root / "status-reg"
    for day in (DAY1, DAY2):
        c = run(home, "certify", str(bundles / "chat-70b" / day), "--registry", str(reg), "--no-pdf")
        assert c.returncode == 0, c.stderr
    c = run(home, "certify", str(bundles / "chat-8b" / DAY1), "--registry", str(reg), "--no-pdf")
    assert c.returncode == 0, c.stderr
    ids = {
        "old70": f"dc-east-1.chat-70b.{DAY1.replace('-', '')}T0000Z-{DAY2.replace('-', '')}T0000Z",
        "new70": f"dc-east-1.chat-70b.{DAY2.replace('-', '')}T0000Z-20260103T0000Z",
        "8b": f"dc-east-1.chat-8b.{DAY1.replace('-', '')}T0000Z-{DAY2.replace('-', '')}T0000Z",
    }
    # Size classes from the sample fleet's active parameters and the default scheme's class limits.
    scheme = yaml.safe_load((REPO / "plugins/greencert/schemes/greencert-2026.2.yaml").read_text())
    from greencert.sources.simulate import SAMPLE_FLEET

    params = {p.deployment: p.active_params_billions for p in SAMPLE_FLEET}

    def size_class(billions: float) -> str:
        for cls in scheme["size_classes"]:
            if cls["max_active_params_billions"] is None or billions <= cls["max_active_params_billions"]:
                return cls["name"]
        raise AssertionError

    classes = {"old70": size_class(params["chat-70b"]), "new70": size_class(params["chat-70b"])}
    classes["8b"] = size_class(params["chat-8b"])
    assert classes["8b"] != classes["new70"]  # the check below tells them apart

    def everywhere(at: str) -> dict[str, dict[str, str]]:
        rebuilt = run(home, "registry", "rebuild", str(reg), "--at", at)
        assert rebuilt.returncode == 0, rebuilt.stderr
        index = json.loads((reg / "index.json").read_bytes())
        html = (reg / "index.html").read_text()
        summary = run(home, "summary", str(reg), "--at", at)
        listing = run(home, "registry", "list", str(reg), "--at", at)
        seen: dict[str, dict[str, str]] = {}
        for key, cid in ids.items():
            row = next(r for r in index["certificates"] if r["certificate_id"] == cid)
            assert row["size_class"] == classes[key]
            line = next(ln for ln in listing.stdout.splitlines() if ln.startswith(cid))
            deployment, day = (
                cid.split(".")[1],
                f"{cid.split('.')[2][:4]}-{cid.split('.')[2][4:6]}-{cid.split('.')[2][6:8]}",
            )
            srow = next(ln for ln in summary.stdout.splitlines() if f" {deployment} " in ln and day in ln)
            assert f"  {classes[key]}  " in line and f"  {classes[key]}  " in srow
            # the HTML row of that certificate (the page's rows link to their JSON)
            html_row = next(tr for tr in html.split("<tr>") if f"{cid}.json" in tr)
            assert f"size class {classes[key]}" in html_row.replace("&lt;", "<").replace("&gt;", ">")
            verify = run(
                home, "verify", str(reg / row["paths"]["json"]), "--allow-development-key", "--at", at
            )
            verify_status = re.search(r"^status: (.+)$", verify.stdout + verify.stderr, re.M)
            seen[key] = {
                "index": row["display_status"],
                "html": html_row,
                "summary": srow,
                "list": line,
                "verify": verify_status[1] if verify_status else "",
                "verify_code": str(verify.returncode),
            }
        return seen

    # Inside the validity: the newest of each deployment is "development key" (a fresh HOME's key),
    # the older chat-70b day is superseded.
    now = everywhere(INSIDE)

    def html_shows(row: str, shown: str) -> bool:
        return re.search(rf'data-label="status"[^>]*>{re.escape(shown)}(<br>|</td>)', row) is not None

    for key, shown in (("new70", "development key"), ("8b", "development key"), ("old70", "superseded")):
        assert now[key]["index"] == shown and html_shows(now[key]["html"], shown)
        assert now[key]["summary"].endswith(shown) or f"  {shown} (" in now[key]["summary"], now[key]
        assert f"  {shown}" in now[key]["list"], now[key]
    assert now["new70"]["verify"] == "development key" and now["new70"]["verify_code"] == "0"
    # verify checks one certificate: an older period still verifies; the registry calls it superseded
    assert now["old70"]["verify_code"] == "0"
    # Later: every one is expired, in every view; verify fails with its documented status.
    from greencert.certificate.verify import EXIT_CODES

    later = everywhere(LATER)
    for key in ids:
        assert later[key]["index"] == "expired" and html_shows(later[key]["html"], "expired")
        assert " expired (since " in later[key]["summary"] and " expired (since " in later[key]["list"]
        assert later[key]["verify"] == "expired" and later[key]["verify_code"] == str(EXIT_CODES["expired"])
    # Revoked: the revocation wins over everything else.
    rev = run(home, "revoke", ids["8b"], "--registry", str(reg), "--reason", "meter fault", "--at", INSIDE)
    assert rev.returncode == 0, rev.stderr
    after = everywhere(INSIDE)
    assert after["8b"]["index"] == "revoked" and html_shows(after["8b"]["html"], "revoked")
    assert (
        after["8b"]["summary"].endswith("revoked (meter fault)")
        and "revoked (meter fault)" in after["8b"]["list"]
    )
    assert after["8b"]["verify"] == "revoked" and after["8b"]["verify_code"] == str(EXIT_CODES["revoked"])
    counts = json.loads((reg / "index.json").read_bytes())["display_counts"]
    assert counts == {
        "valid": 0, "development key": 1, "superseded": 1, "expired": 0, "revoked": 1, "unverified": 0,
    }  # fmt: skip


def test_certify_fleet_closes_with_grades(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    fleet = tmp_path / "fleet"
    sim = run(home, "simulate", "--fleet", "--scale", "0.02", "--out", str(fleet), "--date", DAY1)
    assert sim.returncode == 0, sim.stderr
    day = fleet / DAY1
    reg = tmp_path / "reg"
    proc = run(home, "certify-fleet", str(day), "--registry", str(reg), "--work-dir", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = json.loads((day / "fleet.json").read_text())["deployments"]
    certs = {}
    for path in reg.glob("*/*/*.json"):
        if path.with_name(path.name + ".sig").exists():
            cert = json.loads(path.read_bytes())
            certs[cert["scope"]["deployment"]] = cert
    assert set(certs) == {e["deployment"] for e in expected}
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["deployment", "grade", "kWh/Mtok"]
    for deployment, cert in certs.items():
        row = next(ln for ln in lines if ln.startswith(deployment + " "))
        assert row.split()[1] == cert["grade"]
        assert cert["grading"]["size_class"] in row
    grades = Counter(c["grade"] for c in certs.values())
    closing = lines[-1]
    assert closing.startswith(f"{len(certs)} of {len(expected)} deployments certified (grades: ")
    assert ", ".join(f"{g} {n}" for g, n in sorted(grades.items())) in closing
    # internal stage names only with -v
    assert "read_profile_compute" not in proc.stdout + proc.stderr

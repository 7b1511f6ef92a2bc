"""Faults while publishing: a process killed at every write, two runs of one period at once, a full disk.

What must hold (issue: "never lose a certificate"):

* killed at any write, the registry shows every visible file either as it was before or as it
  is after a complete publication -- never a partial or mixed file -- and every certificate it
  shows is whole (signature, canonical bytes, evidence hashes); a certificate that was already
  published stays published; the rerun completes the registry to exactly the complete state;
* two runs publishing the same period at once leave one certificate and files from one run only;
* a full disk on the registry gives a clear error, and earlier certificates stay intact.

The kill points are found, not guessed: the publishing process runs with a Python audit hook
(``sys.addaudithook``) that counts every file-system write into the registry (open for writing,
rename, remove, mkdir, copy) and sends itself SIGKILL just before the N-th, for every N.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_manifest
from trust_helpers import is_registry_state

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
INDEX_FILES = ("index.json", "index.html")


def hour_bundle(target: Path, hour: int = 0, watts: float = 500.0) -> Path:
    """One GPU at constant ``watts`` for one hour, 1,000,000 output tokens, PUE 1.2, 400 g/kWh."""
    from greencert.bundle.writer import write_bundle

    start = T0 + dt.timedelta(hours=hour)
    t = start.timestamp() + np.arange(0.0, 3601.0, 60.0)
    out = 1_000_000.0 * (t - t[0]) / 3600.0
    tables = {
        "power.csv": {"timestamp": t, "device": np.full(t.size, "gpu0"), "value": np.full(t.size, watts)},
        "tokens.csv": {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out},
    }
    # Whole node metered, every provisioned device in the evidence: the figure is metered energy x PUE.
    manifest = make_manifest(
        start,
        start + dt.timedelta(hours=1),
        power={"file": "power.csv", "kind": "gauge", "unit": "W", "meter_class": "node_meter"},
    )
    manifest["idle_capacity"] = {"basis": "metered"}
    return write_bundle(target, manifest, tables)


def write_signing_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    # The public half, as the issuer hands it to auditors (verify pins it).
    Path(f"{path}.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture(scope="module")
def stages(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Validated, computed and graded stage outputs of three bundles, and a signing key.

    ``x``: the period 00:00-01:00; ``x_corrected``: the same period with other power readings
    (a corrected bundle, so a different certificate under the same id); ``y``: 01:00-02:00.
    """
    from greencert.pipeline import compute_stage, grade_stage, validate_stage

    root = tmp_path_factory.mktemp("faults")
    out: dict = {"key": str(write_signing_key(root / "issuer.key"))}
    for name, hour, watts in (("x", 0, 500.0), ("x_corrected", 0, 520.0), ("y", 1, 500.0)):
        bundle = hour_bundle(root / name, hour, watts)
        work = root / "work" / name
        work.mkdir(parents=True)
        validation = validate_stage(bundle, work)
        graded = grade_stage(compute_stage(bundle, validation, work), work)
        out[name] = {"bundle": str(bundle), "validation": validation, "graded": graded}
    return out


def publish(stages: dict, name: str, registry: Path) -> Path:
    from greencert.pipeline import publish_stage

    s = stages[name]
    return Path(publish_stage(s["graded"], s["bundle"], s["validation"], registry, stages["key"], pdf=False))


def visible_files(registry: Path) -> dict[str, bytes]:
    """What readers see: every file whose path has no hidden (dot) component."""
    out = {}
    for path in registry.rglob("*"):
        rel = path.relative_to(registry)
        if path.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = path.read_bytes()
    return out


def hidden_files(registry: Path) -> list[str]:
    return sorted(
        p.relative_to(registry).as_posix()
        for p in registry.rglob("*")
        if any(part.startswith(".") for part in p.relative_to(registry).parts)
    )


def certificates(registry: Path) -> list[Path]:
    from greencert.certificate.registry import certificate_files

    return certificate_files(registry)


def assert_whole(cert_path: Path, registry: Path) -> dict:
    """Signature over the exact bytes, canonical form, evidence hashes, label and report present."""
    from greencert.bundle.reader import sha256_file
    from greencert.certificate.sign import load_public_key, signature_valid
    from greencert.certificate.verify import check_canonical, read_certificate

    cert, raw = read_certificate(cert_path)
    public = load_public_key(cert_path.with_name(cert_path.name.removesuffix(".json") + ".issuer.pem"))
    assert signature_valid(public, cert_path.with_name(cert_path.name + ".sig").read_bytes(), raw), cert_path
    check_canonical(cert, raw, cert_path)
    evidence = cert_path.parent / cert["evidence"]["bundle"]
    for item in cert["inputs"]:
        assert sha256_file(evidence / item["file"]) == item["sha256"], (cert_path, item["file"])
    stem = cert_path.name.removesuffix(".json")
    for companion in (f"{stem}.html", f"{stem}.validation.json"):
        assert (cert_path.parent / companion).is_file(), companion
    return cert


def assert_index_consistent(registry: Path) -> None:
    index = registry / "index.json"
    if not index.exists():
        return
    rows = json.loads(index.read_bytes())["certificates"]
    for row in rows:
        assert (registry / row["paths"]["json"]).is_file(), row["paths"]["json"]


def assert_trusted(registry: Path, key_file: str) -> None:
    """Every certificate is listed in the signed metadata (status checked, not unverified) and its
    issuance-log inclusion proof verifies against the issuer's signed tree head."""
    import hashlib

    from greencert.certificate.registry import list_certificates
    from greencert.certificate.sign import load_key_file
    from greencert.trust.log import check_inclusion
    from greencert.trust.store import TrustAnchor

    key = load_key_file(key_file)
    anchors = [TrustAnchor(key.key_id, key.public, "issuer", "test key")]
    rows = list_certificates(registry, T0 + dt.timedelta(days=1), anchors)
    for row in rows:
        assert row["status"] != "unverified", row["verification"]
        cert = registry / row["paths"]["json"]
        record = json.loads((registry / row["paths"]["log_proof"]).read_bytes())
        check_inclusion(record, key.public, hashlib.sha256(cert.read_bytes()).hexdigest())


def assert_only_expected_hidden(registry: Path) -> None:
    """No temporaries: a publication removes what killed runs left (certificate files under the
    certificate's lock, registry-wide files under the registry lock); only the lock files stay."""
    for name in hidden_files(registry):
        assert name.rsplit("/", 1)[-1].endswith(".lock"), name


# ---------------------------------------------------------------- killed at every write

_KILL_DRIVER = r"""
import json, os, shutil, signal, sys, traceback
args = json.loads(sys.argv[1])
from greencert.pipeline import publish_stage

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT
EVENTS = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "shutil.copyfile", "shutil.rmtree", "os.truncate"}


def run(registry, kill_at, count_file):
    # Publish in a forked child (imports stay warm); SIGKILL it just before its kill_at-th write.
    pid = os.fork()
    if pid == 0:
        root = os.path.realpath(registry) + os.sep
        count = 0

        def hook(event, a):
            nonlocal count
            if event == "open":
                path, mode, flags = a
                paths = [path] if isinstance(flags, int) and flags & WRITE_FLAGS else []
            elif event in EVENTS:
                paths = list(a)
            else:
                return
            paths = [os.fsdecode(p) for p in paths if isinstance(p, (str, bytes, os.PathLike))]
            if not any(os.path.realpath(p).startswith(root) for p in paths):
                return
            count += 1
            if count == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        sys.addaudithook(hook)
        code = 0
        try:
            publish_stage(args["graded"], args["bundle"], args["validation"], registry, args["key"], pdf=False)
        except BaseException:
            traceback.print_exc()
            code = 1
        with open(count_file, "w") as handle:
            handle.write(str(count))
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


out = args["out"]
# Warm up in the parent (lazy imports, templates), so that each forked child only publishes.
publish_stage(args["graded"], args["bundle"], args["validation"], os.path.join(out, "warm-up"), args["key"], pdf=False)
final = os.path.join(out, "final")
shutil.copytree(args["template"], final)
status = run(final, 0, os.path.join(out, "count"))
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
events = int(open(os.path.join(out, "count")).read())
points = []
for n in range(1, events + 1):
    registry = os.path.join(out, str(n), "registry")
    shutil.copytree(args["template"], registry)
    status = run(registry, n, os.path.join(out, str(n), "count"))
    signalled = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    shutil.copytree(registry, os.path.join(out, str(n), "killed"))
    rerun = run(registry, 0, os.path.join(out, str(n), "rerun-count"))
    points.append({"n": n, "signal": signalled, "rerun_exit": os.WEXITSTATUS(rerun) if os.WIFEXITED(rerun) else -1})
print(json.dumps({"events": events, "points": points}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "plugins"), "GX_ANALYTICS_ENABLED": "false"}


@pytest.mark.parametrize(
    ("scenario", "before", "publishing"),
    [
        ("first publication", None, "x"),
        ("rerun of a published period", "x", "x"),
        ("corrected bundle for a published period", "x", "x_corrected"),
    ],
)
def test_killed_at_every_write_the_registry_stays_whole_and_the_rerun_completes_it(
    scenario: str, before: str | None, publishing: str, stages: dict, tmp_path: Path
) -> None:
    template = tmp_path / "template"
    template.mkdir()
    if before:
        publish(stages, before, template)
    old_cert = certificates(template)
    s = stages[publishing]
    args = {**s, "key": stages["key"], "template": str(template), "out": str(tmp_path / "runs")}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_DRIVER, json.dumps(args)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=1800,
        check=True,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    runs = tmp_path / "runs"
    before_files = visible_files(template)
    after_files = visible_files(runs / "final")
    [final_cert] = certificates(runs / "final")
    assert_whole(final_cert, runs / "final")
    assert result["events"] >= 15, result  # the sweep covers a real publication
    print(
        f"{scenario}: killed at each of {result['events']} registry writes"
    )  # figures for docs/robustness.md
    for point in result["points"]:
        killed = runs / str(point["n"]) / "killed"
        assert point["signal"] == signal.SIGKILL, point
        # Every visible file is the old version or the new one, never partial or mixed.
        for rel, data in visible_files(killed).items():
            if is_registry_state(rel):
                assert rel != "index.json" or json.loads(data)["format"]
                continue
            assert data in (before_files.get(rel), after_files.get(rel)), (point["n"], rel)
        shown = certificates(killed)
        for cert in shown:
            assert_whole(cert, killed)
        if publishing == before:
            # A published certificate never disappears, not even for a moment.
            assert [c.name for c in shown] == [c.name for c in old_cert], point["n"]
        if publishing != "x_corrected":
            assert_index_consistent(killed)
        # The rerun completes exactly the state of an uninterrupted publication.
        rerun = runs / str(point["n"]) / "registry"
        assert point["rerun_exit"] == 0, point
        done = visible_files(rerun)
        assert {k: v for k, v in done.items() if not is_registry_state(k)} == {
            k: v for k, v in after_files.items() if not is_registry_state(k)
        }, point["n"]
        assert_trusted(rerun, stages["key"])
        assert_index_consistent(rerun)
        assert_only_expected_hidden(rerun)
    # And the result of a rerun passes the full `greencert verify` (figures recomputed from the evidence).
    from greencert.certificate.verify import verify_certificate

    [cert] = certificates(runs / str(result["events"]) / "registry")
    verify_certificate(cert, at=T0 + dt.timedelta(days=1), public_key=Path(stages["key"] + ".pub"))


# ---------------------------------------------------------------- two runs of the same period at once

_PAUSING_CLI = r"""
import json, os, sys, time
args = json.loads(sys.argv[1])


def hook(event, a):
    if event != "open" or not isinstance(a[0], str):
        return
    name = os.path.basename(a[0])
    if args.get("lock_marker") and name.endswith(".lock") and not name.startswith(".index"):
        open(args["lock_marker"], "w").close()
    if args.get("pause_marker") and name.startswith(".") and ".html." in name and name.endswith(".tmp"):
        # Inside the publication (evidence and validation report already staged): wait for the test.
        open(args["pause_marker"], "w").close()
        while not os.path.exists(args["go"]):
            time.sleep(0.05)


sys.addaudithook(hook)
from greencert.cli import main

sys.exit(main(args["argv"]))
"""


def _wait_for(condition, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_two_runs_of_the_same_period_leave_one_certificate_from_one_run(stages: dict, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    reference = tmp_path / "reference"
    marks = {k: str(tmp_path / k) for k in ("a-paused", "b-at-lock", "go")}

    def start(bundle: str, into: Path = registry, **hooks: str) -> subprocess.Popen:
        argv = ["certify", bundle, "--out", str(into), "--signing-key", stages["key"], "--no-pdf"]
        return subprocess.Popen(
            [sys.executable, "-c", _PAUSING_CLI, json.dumps({"argv": argv, **hooks})],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # What the second run alone publishes: the same command, into a registry of its own.
    alone = start(stages["x_corrected"]["bundle"], reference)
    _, alone_err = alone.communicate(timeout=900)
    assert alone.returncode == 0, alone_err
    # Run A publishes x and is held in the middle of its publication; run B then certifies the
    # same period from a corrected bundle.
    a = start(stages["x"]["bundle"], pause_marker=marks["a-paused"], go=marks["go"])
    _wait_for(lambda: os.path.exists(marks["a-paused"]) or a.poll() is not None)
    assert a.poll() is None, a.communicate()
    b = start(stages["x_corrected"]["bundle"], lock_marker=marks["b-at-lock"])
    # B reaches the certificate's lock (or, without one, would finish while A is held).
    _wait_for(lambda: os.path.exists(marks["b-at-lock"]) or b.poll() is not None)
    Path(marks["go"]).touch()
    out_a, err_a = a.communicate(timeout=900)
    out_b, err_b = b.communicate(timeout=900)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    assert "Traceback" not in err_a + err_b
    # Each run reports the certificate it published, not what it finds at the path afterwards (it
    # used to read it back while B replaced it: FileNotFoundError). 500 W (A) and 520 W (B) for 1 h
    # at PUE 1.2, 10^6 output tokens: 0.6 and 0.624 kWh/Mtok.
    assert "0.6 kWh/Mtok" in out_a and "0.624 kWh/Mtok" in out_b, (out_a, out_b)
    [cert] = certificates(registry)
    assert_whole(cert, registry)
    # Every file comes from B, the run that published last: nothing of A's is mixed in.
    got = {k: v for k, v in visible_files(registry).items() if not is_registry_state(k)}
    want = {k: v for k, v in visible_files(reference).items() if not is_registry_state(k)}
    assert got == want
    assert_index_consistent(registry)
    assert [h for h in hidden_files(registry) if not h.endswith(".lock")] == []


# ---------------------------------------------------------------- no leftovers after a killed run

_KILLED_CLI = r"""
import json, os, signal, sys
args = json.loads(sys.argv[1])
root = os.path.realpath(args["registry"]) + os.sep


def hook(event, a):
    # SIGKILL at the first temporary written into the registry: the work folder exists by then.
    if event == "open" and isinstance(a[0], str) and os.path.realpath(a[0]).startswith(root):
        if os.path.basename(a[0]).endswith(".tmp") and isinstance(a[2], int) and a[2] & os.O_CREAT:
            os.kill(os.getpid(), signal.SIGKILL)


if args["kill"]:
    sys.addaudithook(hook)
from greencert.cli import main

sys.exit(main(args["argv"]))
"""


def test_a_killed_certify_leaves_no_work_folder_or_temporary_after_the_next_run(
    stages: dict, tmp_path: Path
) -> None:
    registry, tmpdir = tmp_path / "registry", tmp_path / "tmp"
    tmpdir.mkdir()
    argv = [
        "certify",
        stages["x"]["bundle"],
        "--out",
        str(registry),
        "--signing-key",
        stages["key"],
        "--no-pdf",
    ]

    def run(kill: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-c",
                _KILLED_CLI,
                json.dumps({"argv": argv, "registry": str(registry), "kill": kill}),
            ],
            env={**_env(), "TMPDIR": str(tmpdir)},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    publish(stages, "y", registry)  # the registry exists, with a certificate, before the killed run
    killed = run(kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = sorted(p.name for p in tmpdir.iterdir())
    assert any(name.startswith("greencert-") for name in left), left  # the killed run's work folder
    assert [h for h in hidden_files(registry) if not h.endswith(".lock")], "no temporary was left"
    rerun = run(kill=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted(p.name for p in tmpdir.iterdir()) == []
    assert_only_expected_hidden(registry)
    assert sorted(c.name for c in certificates(registry)) == sorted(
        [Path(publish(stages, "x", tmp_path / "ref")).name, Path(publish(stages, "y", tmp_path / "ref")).name]
    )


# ---------------------------------------------------------------- a full disk

_FULL_DISK_DRIVER = r"""
import errno, json, os, shutil, sys
args = json.loads(sys.argv[1])
from greencert.errors import GreenCertError
from greencert.pipeline import publish_stage

registry = args["registry"]
filler = os.path.join(registry, ".filler")


def fill(slack):
    # Fill the file system, then give back `slack` bytes.
    if os.path.exists(filler):
        os.unlink(filler)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    os.truncate(filler, max(0, os.path.getsize(filler) - slack))


def attempt(name):
    s = args[name]
    try:
        publish_stage(s["graded"], s["bundle"], s["validation"], registry, args["key"], pdf=False)
        return {"ok": True}
    except GreenCertError as exc:
        return {"ok": False, "error": str(exc), "type": type(exc).__name__, "exit": exc.exit_code}


results = {"first": attempt("x")}
shutil.copytree(registry, os.path.join(args["out"], "after-first"), ignore=shutil.ignore_patterns(".filler"))
for slack in args["slacks"]:
    for name in ("y", "x_corrected"):
        fill(slack)
        results[f"{slack}-{name}"] = attempt(name)
        shutil.copytree(
            registry, os.path.join(args["out"], f"{slack}-{name}"), ignore=shutil.ignore_patterns(".filler")
        )
print(json.dumps(results))
"""


def _namespace_prefix() -> list[str]:
    """A private mount namespace (root), or a user namespace mapping us to root (unprivileged)."""
    unshare = shutil.which("unshare")
    assert unshare, "util-linux unshare is needed for the full-disk test"
    return [unshare, "--mount", "--propagation", "private"] if os.geteuid() == 0 else [
        unshare, "--user", "--map-root-user", "--mount", "--propagation", "private"
    ]  # fmt: skip


def test_full_disk_is_a_clear_error_and_earlier_certificates_stay_intact(
    stages: dict, tmp_path: Path
) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    out = tmp_path / "states"
    out.mkdir()
    slacks = [0, 8192, 32768, 131072]
    args = {**stages, "registry": str(registry), "out": str(out), "slacks": slacks}
    # A 2 MiB tmpfs mounted on the registry, in a mount namespace of its own (gone when the run ends).
    script = 'mount -t tmpfs -o size=2m tmpfs "$1" && shift && exec "$@"'
    proc = subprocess.run(
        [
            *_namespace_prefix(),
            "sh",
            "-c",
            script,
            "sh",
            str(registry),
            sys.executable,
            "-c",
            _FULL_DISK_DRIVER,
            json.dumps(args),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results["first"] == {"ok": True}
    first = out / "after-first"
    [x_cert] = certificates(first)
    published = visible_files(first)  # what the registry held after the last successful publication
    failures = 0
    for slack in slacks:
        for name in ("y", "x_corrected"):
            state = out / f"{slack}-{name}"
            r = results[f"{slack}-{name}"]
            shown = certificates(state)
            for cert in shown:
                assert_whole(cert, state)
            assert x_cert.name in [c.name for c in shown]
            assert_only_expected_hidden(state)
            if r["ok"] or "is published" in r.get("error", ""):
                # Room enough (or room for the certificate but not for the index): it went through.
                published = visible_files(state)
                continue
            failures += 1
            assert r["type"] == "PublishError" and r["exit"] == 5, r
            assert "No space left on device" in r["error"], r
            assert str(registry) in r["error"], r  # names where it could not write
            # Nothing changed: every certificate and every file of it is exactly as before.
            now = visible_files(state)
            assert {k: v for k, v in now.items() if not is_registry_state(k)} == {
                k: v for k, v in published.items() if not is_registry_state(k)
            }, (slack, name)
    print(f"full disk: {failures} of {2 * len(slacks)} publications refused, registry unchanged each time")
    # With no room at all both publications fail; with room enough, they go through.
    assert not results["0-y"]["ok"] and not results["0-x_corrected"]["ok"]
    assert failures >= 2

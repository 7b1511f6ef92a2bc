"""Many publishers and readers on one registry: publications per second, reader latency, faults.

    python benchmarks/registry_load.py [--certificates 500] [--publishers 8] [--readers 2]
                                       [--store local|s3|both] [--kills 0] [--seed 1]
                                       [--s3-certificates N]

Makes ``--certificates`` one-hour bundles (four deployments, consecutive hours; validated, computed
and graded once, beforehand, by a pool of two processes: that part is not measured), then starts
``--publishers`` separate publisher processes, each publishing its share with
``pipeline.publish_stage`` (what ``greencert certify`` runs after grading), and ``--readers``
reader processes that list the registry (every row checked against the signed metadata), read
its index and check one random listed certificate as ``greencert verify`` does before it
recomputes the figures (signature, fresh signed status of these bytes, log inclusion proof,
evidence hashes), until the publishers are done. ``--kills N`` SIGKILLs a random running publisher N times, at a
random moment, and restarts it on what it had not reported done (a rerun).

The S3 registry is a moto standalone server on 127.0.0.1 (the same as the tests). Reports: wall
time, publications per second, reader latency percentiles, and the checks the tests assert
(every certificate listed exactly once, log entries, signed targets, index, reader errors).
Figures, not assertions; the test tests/integration/certificate/test_registry_load.py runs the same code
with a small count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "tests")]

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
AT = T0 + dt.timedelta(days=30)  # statuses are evaluated here (certificates are valid 6 months)
DEPLOYMENTS = 4

# ---------------------------------------------------------------- inputs


def _bundle(target: Path, index: int) -> Path:
    """Bundle ``index``: deployment load-<index % 4>, hour index // 4 after T0; one GPU at a wattage
    that differs per bundle, 1,000,000 output tokens in the hour, PUE 1.2, 400 g/kWh."""
    import numpy as np

    from conftest import make_manifest
    from greencert.bundle.writer import write_bundle

    start = T0 + dt.timedelta(hours=index // DEPLOYMENTS)
    t = start.timestamp() + np.arange(0.0, 3601.0, 60.0)
    out = 1_000_000.0 * (t - t[0]) / 3600.0
    watts = 400.0 + index % 97
    tables = {
        "power.csv": {"timestamp": t, "device": np.full(t.size, "gpu0"), "value": np.full(t.size, watts)},
        "tokens.csv": {"timestamp": t, "output_tokens": out, "input_tokens": 3 * out},
    }
    manifest = make_manifest(
        start, start + dt.timedelta(hours=1), scope={"deployment": f"load-{index % DEPLOYMENTS}"}
    )
    return write_bundle(target, manifest, tables)


def _grade(args: tuple[str, int]) -> dict[str, str]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from greencert.pipeline import compute_stage, grade_stage, validate_stage

    root, index = Path(args[0]), args[1]
    bundle = _bundle(root / "bundles" / f"b{index:04d}", index)
    work = root / "work" / f"b{index:04d}"
    work.mkdir(parents=True, exist_ok=True)
    validation = validate_stage(bundle, work)
    graded = grade_stage(compute_stage(bundle, validation, work), work)
    cert_id = json.loads(Path(graded).read_text())
    return {
        "bundle": str(bundle),
        "validation": str(validation),
        "graded": str(graded),
        "id": _cert_id(cert_id),
    }


def _cert_id(graded: dict[str, Any]) -> str:
    from greencert.certificate.build import build_certificate

    return str(build_certificate(graded, {"key_id": "0" * 32})["certificate_id"])


def make_stages(root: Path, count: int, processes: int = 2) -> list[dict[str, str]]:
    """Validated, computed and graded stage outputs of ``count`` distinct bundles."""
    root.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return list(pool.map(_grade, [(str(root), i) for i in range(count)]))


def write_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    Path(f"{path}.pub").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


# ---------------------------------------------------------------- processes

PUBLISHER = r"""
import json, sys, time, traceback
args = json.loads(sys.argv[1])
from greencert.certificate import issue
from greencert.errors import GreenCertError
from greencert.pipeline import publish_stage

spent = {"trust": 0.0, "index": 0.0}


def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[name] += time.perf_counter() - t
    return wrapper


# Where a publication's time goes: the registry-wide update (log, signed metadata) and the index.
issue.update_trust = timed("trust", issue.update_trust)
issue.index_after_commit = timed("index", issue.index_after_commit)
for stage in args["stages"]:
    spent.update(trust=0.0, index=0.0)
    t0 = time.perf_counter()
    try:
        publish_stage(stage["graded"], stage["bundle"], stage["validation"], args["registry"], args["key"], pdf=False)
    except GreenCertError as exc:
        print(f"error {stage['id']}: {exc}", flush=True)
        sys.exit(5)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    total = time.perf_counter() - t0
    print(f"ok {stage['id']} {total:.4f} {spent['trust']:.4f} {spent['index']:.4f}", flush=True)
"""

READER = r"""
import datetime as dt, json, os, random, sys, time, traceback
args = json.loads(sys.argv[1])
from greencert.certificate.registry import list_certificates
from greencert.certificate.sign import load_public_key
from greencert.files import read_tagged, read_whole, registry_root
from greencert.trust.store import TrustAnchor
from greencert.certificate.sign import key_id

public = load_public_key(args["public"])
anchors = [TrustAnchor(key_id(public), public, "issuer", "benchmark key")]
at = dt.datetime.fromisoformat(args["at"])
root = registry_root(args["registry"])
local = "://" not in args["registry"]
seen = set()
out = {"list_ms": [], "verify_ms": [], "index_reads": 0, "errors": [], "iterations": 0, "max_rows": 0}
rng = random.Random(args["seed"])


def check_one(root, row, public, anchors):
    import hashlib
    from greencert.certificate.sign import signature_valid
    from greencert.trust.log import check_inclusion
    from greencert.trust.metadata import open_trusted

    path = root / row["paths"]["json"]
    raw = read_whole(path)
    cert = json.loads(raw)
    if not signature_valid(public, read_whole(path.with_name(path.name + ".sig")), raw):
        return "signature does not verify"
    view = open_trusted(root, anchors, cache=False)
    target = view.targets.get(row["paths"]["json"])
    digest = hashlib.sha256(raw).hexdigest()
    if target is None or target.hashes.get("sha256") != digest:
        return "not listed with these bytes"
    if (view.status_of(row["paths"]["json"]) or {}).get("status") != "issued":
        return "not issued"
    check_inclusion(json.loads(read_whole(root / row["paths"]["log_proof"])), public, digest)
    evidence = path.parent / cert["evidence"]["bundle"]
    for item in cert["inputs"]:
        if hashlib.sha256(read_whole(evidence / item["file"])).hexdigest() != item["sha256"]:
            return f"evidence {item['file']} does not match"
    return None



def error(text):
    if len(out["errors"]) < 20:
        out["errors"].append(text)


while True:
    stop = os.path.exists(args["stop"])
    try:
        t = time.perf_counter()
        rows = list_certificates(root, at, anchors)
        out["list_ms"].append(1000 * (time.perf_counter() - t))
        ids = {r["certificate_id"] for r in rows}
        out["max_rows"] = max(out["max_rows"], len(rows))
        for r in rows:
            if r["status"] not in ("valid", "superseded"):
                error(f"{r['certificate_id']}: {r['status']} ({r['verification']})")
        if len(ids) != len(rows):
            error("a certificate listed twice")
        lost = seen - ids
        if lost:
            error(f"listed before, now missing: {sorted(lost)[:3]}")
        seen |= ids
        data = read_tagged(root / "index.json")[0]
        if data is not None:
            index = json.loads(data)
            out["index_reads"] += 1
            for r in index["certificates"]:
                # The index evaluates statuses at the time it was written (these test periods may
                # have expired by then): what must never show is a row that does not verify.
                if r["status"] == "unverified":
                    error(f"index: {r['certificate_id']}: {r['status']} ({r['verification']})")
        if rows:
            # What `greencert verify` checks before recomputing the figures (that part costs the same
            # whatever the registry does; benchmarks/verify_trust.py times it): the certificate, its
            # signature, its signed status (fresh metadata, these exact bytes, not revoked), its log
            # inclusion proof and its evidence hashes, all read while publishers keep writing.
            row = rng.choice(rows)
            t = time.perf_counter()
            problem = check_one(root, row, public, anchors)
            out["verify_ms"].append(1000 * (time.perf_counter() - t))
            if problem:
                error(f"verify {row['certificate_id']}: {problem}")
    except BaseException as exc:
        error("".join(traceback.format_exception(exc))[-1500:])
    out["iterations"] += 1
    if stop:
        break
print(json.dumps(out))
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO / "benchmarks")]),
        "GX_ANALYTICS_ENABLED": "false",
        **(extra or {}),
    }


def run_load(
    registry: str,
    stages: list[dict[str, str]],
    key: Path,
    *,
    publishers: int = 8,
    readers: int = 2,
    kills: int = 0,
    seed: int = 1,
    env: dict[str, str] | None = None,
    timeout: float = 1800.0,
    reader_registry: str | None = None,
) -> dict[str, Any]:
    """Run the publishers and readers; return timings, reader reports and publisher outcomes.

    ``reader_registry``: where readers read the same registry (e.g. its folder served over HTTP)."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="registry-load-"))
    stop = work / "stop"
    shares = [stages[i::publishers] for i in range(publishers)]
    done: list[set[str]] = [set() for _ in range(publishers)]
    outputs: list[list[str]] = [[] for _ in range(publishers)]
    errors: list[str] = []
    timings: list[list[float]] = []  # per publication: seconds in all, in the trust update, in the index

    def start(i: int) -> subprocess.Popen[str]:
        todo = [s for s in shares[i] if s["id"] not in done[i]]
        args = {"registry": registry, "key": str(key), "stages": todo}
        return subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, json.dumps(args)],
            env=_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    reader_procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                READER,
                json.dumps(
                    {
                        "registry": reader_registry or registry,
                        "public": f"{key}.pub",
                        "at": AT.isoformat(),
                        "stop": str(stop),
                        "seed": r,
                    }
                ),
            ],
            # Each reader its own home: python-tuf's verified-metadata cache (rollback protection).
            env=_env({**(env or {}), "GREENCERT_HOME": str(work / f"reader-{r}")}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(readers)
    ]
    began = time.perf_counter()
    procs = {i: start(i) for i in range(publishers)}
    killed = 0
    restarts = 0
    deadline = time.monotonic() + timeout
    kill_at = [rng.uniform(0.5, 4.0) for _ in range(kills)]
    next_kill = time.monotonic() + (kill_at.pop() if kill_at else 0)

    def collect(i: int, proc: subprocess.Popen[str]) -> None:
        out, err = proc.communicate()
        for line in out.splitlines():
            outputs[i].append(line)
            if line.startswith("ok "):
                cid, *times = line[3:].split()
                done[i].add(cid)
                timings.append([float(x) for x in times])
        if proc.returncode not in (0, -signal.SIGKILL):
            errors.append(f"publisher {i} exit {proc.returncode}: {out[-500:]} {err[-2000:]}")
        if "Traceback" in err:
            errors.append(f"publisher {i} traceback: {err[-2000:]}")

    while procs:
        assert time.monotonic() < deadline, "load run timed out"
        for i, proc in list(procs.items()):
            if proc.poll() is not None:
                collect(i, proc)
                del procs[i]
        if killed < kills and procs and time.monotonic() >= next_kill:
            i = rng.choice(sorted(procs))
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            collect(i, procs.pop(i))
            killed += 1
            next_kill = time.monotonic() + (kill_at.pop() if kill_at else 0)
            procs[i] = start(i)  # the rerun: everything it had not reported done
            restarts += 1
        if killed < kills and not procs:
            break
        time.sleep(0.05)  # polling interval of this driver only (no test waits on it)
    # Publishers that were killed after their last report, or that the run did not kill enough:
    # rerun until every share is reported done (a rerun of a finished publication is a no-op).
    for i in range(publishers):
        if len(done[i]) < len(shares[i]):
            proc = start(i)
            restarts += 1
            collect(i, proc)
    seconds = time.perf_counter() - began
    stop.touch()
    reports = []
    for proc in reader_procs:
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0 or not out.strip():
            errors.append(f"reader exit {proc.returncode}: {err[-2000:]}")
            continue
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "seconds": seconds,
        "published": sum(len(d) for d in done),
        "kills": killed,
        "restarts": restarts,
        "publisher_errors": errors,
        "readers": reports,
        "timings": timings,
    }


# ---------------------------------------------------------------- checks


def check_registry(registry: str, stages: list[dict[str, str]], key: Path) -> dict[str, Any]:
    """What must hold after the run: each certificate exactly once in the files, the signed targets,
    the issuance log (one issue entry each, every inclusion proof valid) and the index; no temporaries."""
    from greencert.certificate.registry import certificate_files, list_certificates
    from greencert.certificate.sign import key_id, load_public_key
    from greencert.files import is_local, registry_root
    from greencert.trust.log import check_inclusion, read_entries
    from greencert.trust.metadata import open_trusted
    from greencert.trust.store import TrustAnchor

    root = registry_root(registry)
    public = load_public_key(f"{key}.pub")
    anchors = [TrustAnchor(key_id(public), public, "issuer", "benchmark key")]
    want = sorted(s["id"] for s in stages)
    rows = list_certificates(root, AT, anchors)
    files = [p.name.removesuffix(".json") for p in certificate_files(root)]
    view = open_trusted(root, anchors, cache=False)
    targets = sorted(Path(t).name.removesuffix(".json") for t in view.targets)
    entries = [json.loads(e) for e in read_entries(root)]
    issued = sorted(e["certificate_id"] for e in entries if e["type"] == "issue")
    index = json.loads((root / "index.json").read_bytes())
    bad_proofs = 0
    for row in rows:
        raw = (root / row["paths"]["json"]).read_bytes()
        record = json.loads((root / row["paths"]["log_proof"]).read_bytes())
        try:
            check_inclusion(record, public, hashlib.sha256(raw).hexdigest())
        except Exception:  # noqa: BLE001 - counted
            bad_proofs += 1
    hidden: list[str] = []
    if is_local(root):
        hidden = sorted(
            p.relative_to(root).as_posix()
            for p in Path(root).rglob("*")
            if any(part.startswith(".") for part in p.relative_to(root).parts)
            and not p.name.endswith(".lock")
        )
    return {
        "expected": len(want),
        "files_exactly_once": sorted(files) == want,
        "listed_exactly_once": sorted(r["certificate_id"] for r in rows) == want,
        "all_verified": all(r["status"] in ("valid", "superseded") for r in rows),
        "targets_exactly_once": targets == want,
        "log_issue_entries_exactly_once": issued == want,
        "index_exactly_once": sorted(r["certificate_id"] for r in index["certificates"]) == want,
        "index_all_verified": all(r["status"] != "unverified" for r in index["certificates"]),
        "bad_inclusion_proofs": bad_proofs,
        "hidden_leftovers": hidden,
    }


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    def pct(values: list[float], q: float) -> float | None:
        if not values:
            return None
        values = sorted(values)
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    lists = [v for r in result["readers"] for v in r["list_ms"]]
    verifies = [v for r in result["readers"] for v in r["verify_ms"]]
    return {
        "publications_per_second": round(result["published"] / result["seconds"], 2),
        "seconds": round(result["seconds"], 1),
        "kills": result["kills"],
        "restarts": result["restarts"],
        "reader_listings": len(lists),
        "list_ms_p50_p95_p99": [pct(lists, 0.5), pct(lists, 0.95), pct(lists, 0.99)],
        "verify_ms_p50_p95_p99": [pct(verifies, 0.5), pct(verifies, 0.95), pct(verifies, 0.99)],
        "reader_errors": sum(len(r["errors"]) for r in result["readers"]),
        "publisher_errors": len(result["publisher_errors"]),
        "mean_list_ms": round(statistics.fmean(lists), 1) if lists else None,
        # Per publication, in the order they finished (so the last ones ran on the largest registry).
        **_breakdown(result.get("timings") or []),
    }


def _breakdown(timings: list[list[float]]) -> dict[str, Any]:
    if not timings:
        return {}
    tenth = max(1, len(timings) // 10)
    out = {}
    for name, part in (("first_tenth", timings[:tenth]), ("last_tenth", timings[-tenth:])):
        out[f"publication_ms_{name}_median_total_trust_index"] = [
            round(1000 * statistics.median(t[i] for t in part), 1) for i in range(3)
        ]
    return out


# ---------------------------------------------------------------- S3 (moto)


class MotoS3:
    """moto's standalone S3 server on 127.0.0.1 with one bucket; ``env`` points boto at it."""

    def __init__(self, bucket: str = "greencert") -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)
        self._forget_clients()
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        self.bucket = bucket

    def stop(self) -> None:
        self.server.stop()
        self._forget_clients()

    @staticmethod
    def _forget_clients() -> None:
        # fsspec keeps one S3FileSystem per set of arguments for the life of the process; the
        # endpoint comes from the environment, so a cached instance would still talk to a server
        # stopped earlier in the same process (a test module after another one).
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=500)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--store", choices=("local", "s3", "both"), default="both")
    parser.add_argument("--kills", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--s3-certificates", type=int, default=None, help="publish only the first N into S3 (default: all)"
    )
    parser.add_argument(
        "--inputs", type=Path, default=None, help="keep the graded bundles here, reuse them next time"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="registry-bench-"))
    os.environ.setdefault("GREENCERT_HOME", str(root / "home"))
    t = time.perf_counter()
    inputs = args.inputs or root / "inputs"
    saved = inputs / f"stages-{args.certificates}.json"
    if saved.exists():
        stages = json.loads(saved.read_text())
    else:
        stages = make_stages(inputs, args.certificates)
        saved.write_text(json.dumps(stages))
    print(
        f"{len(stages)} bundles graded in {time.perf_counter() - t:.1f} s (not part of the figures)",
        flush=True,
    )
    key = write_key(root / "issuer.key")
    stores = ["local", "s3"] if args.store == "both" else [args.store]
    for store in stores:
        moto = None
        if store == "s3":
            moto = MotoS3()
            registry, env = f"s3://{moto.bucket}/registry", moto.env
        else:
            registry, env = str(root / "registry"), {}
        subset = stages[: args.s3_certificates] if store == "s3" and args.s3_certificates else stages
        result = run_load(
            registry,
            subset,
            key,
            publishers=args.publishers,
            readers=args.readers,
            kills=args.kills,
            seed=args.seed,
            env=env,
        )
        figures = summarise(result)
        checks = check_registry(registry, subset, key)
        print(json.dumps({"store": store, **figures, "checks": checks}, indent=1), flush=True)
        for err in result["publisher_errors"][:3]:
            print(err[-1500:])
        for r in result["readers"]:
            for err in r["errors"][:3]:
                print(err[-1500:])
        if moto is not None:
            moto.stop()


if __name__ == "__main__":
    main()

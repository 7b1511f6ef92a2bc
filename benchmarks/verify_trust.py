"""What the trust checks add to ``greencert verify``, against the whole verification, in one run.

    python benchmarks/verify_trust.py [--repeat 5] [--certificates 50]

Publishes ``--certificates`` one-hour golden-case certificates into a fresh registry (a key made
here), then times, per repeat: the trust part alone (python-tuf client refresh from a trusted
root, Ed25519 signature, signed-status lookup, issuance-log inclusion proof) and one full
``verify_certificate`` (which also hashes the evidence and recomputes every figure). It also
times one registry listing (every row checked) for the registry's size. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO / "tests")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--certificates", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="greencert-bench-trust-"))
    os.environ["GREENCERT_HOME"] = str(work / "home")
    os.environ["GREENCERT_LABEL_PDF"] = "0"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from conftest import T0, write_golden_bundle
    from greencert.certificate.registry import list_certificates
    from greencert.certificate.sign import SigningKey, signature_valid
    from greencert.certificate.verify import verify_certificate
    from greencert.pipeline import certify
    from greencert.trust import log as issuance_log
    from greencert.trust.metadata import open_trusted
    from greencert.trust.store import TrustAnchor

    key = SigningKey(Ed25519PrivateKey.generate(), False, "benchmark")
    registry = work / "registry"
    first = None
    began = time.perf_counter()
    for i in range(args.certificates):
        bundle = write_golden_bundle(work / f"bundle-{i}")
        manifest = bundle / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace("golden-8b", f"golden-{i}"))
        path = Path(certify(bundle, registry, signing_key=key, pdf=False))
        first = first or path
    publish_s = time.perf_counter() - began
    anchors = [TrustAnchor(key.key_id, key.public, "benchmark", "in-process")]
    at = T0 + dt.timedelta(days=1)
    trust_s, full_s = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        view = open_trusted(registry, anchors, cache=False)
        raw = first.read_bytes()
        cert = json.loads(raw)
        assert signature_valid(
            view.issuer_keys[key.key_id], first.with_name(first.name + ".sig").read_bytes(), raw
        )
        rel = f"{cert['scope']['site']}/{cert['scope']['deployment']}/{cert['certificate_id']}.json"
        assert view.status_of(rel)["status"] == "issued"
        record = json.loads(first.with_name(first.name.removesuffix(".json") + ".log.json").read_bytes())
        issuance_log.check_inclusion(record, key.public, hashlib.sha256(raw).hexdigest())
        trust_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        from greencert.certificate.verify import TrustOptions

        store = work / "trust.json"
        from greencert.trust.store import add

        pem = work / "issuer.pem"
        pem.write_bytes(key.public_pem)
        add(pem, "benchmark", store=store)
        verify_certificate(first, at=at, options=TrustOptions(trust_store=store))
        full_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    rows = list_certificates(registry, at, anchors)
    list_s = time.perf_counter() - t
    assert len(rows) == args.certificates and {r["status"] for r in rows} == {"valid"}
    med_trust, med_full = statistics.median(trust_s), statistics.median(full_s)
    print(
        f"published {args.certificates} certificates in {publish_s:.1f} s ({publish_s / args.certificates:.2f} s each)"
    )
    print(
        f"trust checks of one certificate: median {med_trust * 1e3:.1f} ms (min {min(trust_s) * 1e3:.1f}, max {max(trust_s) * 1e3:.1f})"
    )
    print(f"full verify of one certificate:  median {med_full:.2f} s; trust share {med_trust / med_full:.1%}")
    print(f"listing {len(rows)} certificates, every row checked: {list_s * 1e3:.0f} ms")


if __name__ == "__main__":
    main()

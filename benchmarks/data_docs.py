"""What GX Data Docs cost per bundle, against the whole certification of the same bundle, in one run.

    python benchmarks/data_docs.py [--repeat 5] [--deployment chat-8b]

Simulates one sample-fleet day (``greencert simulate``), then per repeat: one full ``certify``
(validate with the Data Docs build, compute, grade, publish with the Data Docs copy; no PDF) into
a fresh registry, the GX validation alone, and the Data Docs build alone from the run's own
validation report. Prints medians, the Data Docs share of the certification and the published
site's size. Figures, not assertions (docs/label.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--deployment", default="chat-8b")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="greencert-bench-datadocs-"))
    os.environ["GREENCERT_HOME"] = str(work / "home")
    os.environ["GREENCERT_LABEL_PDF"] = "0"
    day = "2026-01-01"
    greencert = str(Path(sys.executable).with_name("greencert"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    subprocess.run([greencert, "simulate", "--out", str(work / "bundles"), "--date", day], check=True, env=env,
                   capture_output=True)  # fmt: skip
    bundle = work / "bundles" / args.deployment / day

    from greencert.bundle import open_bundle
    from greencert.grading import load_scheme
    from greencert.pipeline import certify
    from greencert.validation import validate_bundle
    from greencert.validation.gx import _gx, build_data_docs

    _gx()  # GX's import (seconds) is paid once per process by validation anyway: not counted here
    scheme = load_scheme()
    totals, validations, docs = [], [], []
    size = 0
    for r in range(args.repeat + 1):  # the first round warms caches and is not counted
        runs = work / f"run{r}"
        began = time.perf_counter()
        cert = Path(certify(bundle, runs / "registry", work_dir=runs / "work", pdf=False))
        total = time.perf_counter() - began
        report = json.loads((runs / "work" / "validation.json").read_bytes())
        began = time.perf_counter()
        validate_bundle(open_bundle(bundle), scheme)
        validation = time.perf_counter() - began
        began = time.perf_counter()
        build_data_docs(report, runs / "docs-alone", "bench", "2026-01-02T00:00:00Z")
        doc = time.perf_counter() - began
        if r:
            totals.append(total)
            validations.append(validation)
            docs.append(doc)
        site = cert.with_name(cert.name.removesuffix(".json") + ".datadocs")
        size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        files = sum(1 for p in site.rglob("*") if p.is_file())
    t, v, d = (statistics.median(x) for x in (totals, validations, docs))
    print(f"bundle {args.deployment} {day}, {args.repeat} repeats (medians)")
    print(f"  certify (validate + Data Docs + compute + grade + publish): {t:.3f} s")
    print(f"  GX validation alone:                                       {v:.3f} s")
    print(f"  Data Docs build alone:                                     {d:.3f} s")
    print(f"  Data Docs / certify: {d / t:.1%}; Data Docs / validation: {d / v:.2f}x")
    print(f"  published site: {files} files, {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()

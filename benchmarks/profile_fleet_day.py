"""Where a fleet-day's time goes, per deployment bundle: cProfile (CPU time) of the streaming stage.

    python benchmarks/profile_fleet_day.py [--bundles 10] [--scheme FILE] [--sort tottime]

Profiles what ``greencert.fleet`` does for each bundle before validation
(read + hash, per-device statistics, integration, figures, daily partial) on
the cached full-size workload of ``benchmarks/fleet_day.py`` (generated if
missing), after one unprofiled bundle to warm imports. Also prints the minimum
CPU time of each step over the bundles. The GX run and publication are
profiled by the benchmark's phase times.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, default=REPO / "build" / "benchmark-cache")
    parser.add_argument(
        "--scheme", type=Path, default=REPO / "plugins/greencert/schemes/greencert-2026.1.yaml"
    )
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    sys.path.insert(0, str(REPO / "benchmarks"))
    from fleet_day import _workload

    from greencert.bundle import open_bundle
    from greencert.compute.partials import day_partial
    from greencert.fleet_day import deployment_bundles
    from greencert.grading import load_scheme
    from greencert.pipeline import figures_document
    from greencert.validation.run import profile_bundle

    day, _ = _workload(args.cache.resolve(), args.scale)
    scheme = load_scheme(args.scheme)
    paths = deployment_bundles(day)[: args.bundles + 1]
    steps = {"read": [], "statistics": [], "figures": [], "partial": []}

    def one(path: Path, record: bool) -> None:
        marks = [time.process_time()]
        bundle = open_bundle(path)
        marks.append(time.process_time())
        items, _ = profile_bundle(bundle, scheme)
        marks.append(time.process_time())
        figures = figures_document(bundle, scheme, {"suites": [], "rows": {}})
        marks.append(time.process_time())
        day_partial(bundle, scheme, {}, figures["methodology"])
        marks.append(time.process_time())
        if record:
            for name, a, b in zip(steps, marks, marks[1:], strict=False):
                steps[name].append(b - a)

    one(paths[0], record=False)
    for path in paths[1:]:
        one(path, record=True)  # unprofiled timings
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    for path in paths[1:]:
        one(path, record=False)
    profiler.disable()
    print(
        f"per-bundle CPU time, minimum over {len(paths) - 1} bundles of 160 GPUs (scheme {scheme.version}):"
    )
    for name, values in steps.items():
        print(f"  {name:10s} {min(values) * 1e3:7.1f} ms")
    print(f"  {'total':10s} {sum(min(v) for v in steps.values()) * 1e3:7.1f} ms")
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

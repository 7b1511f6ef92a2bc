"""The fleet-day folder: one evidence bundle per deployment, and ``fleet.json``, its index.

The simulator (``sources.fleet``) writes it; a fleet run (``greencert.fleet``, ``greencert certify-fleet``)
reads it. A leaf module (standard library only): a fleet run lists its bundles first, and importing
the simulator (numpy, pyarrow, the manifest models) at that point would delay its start.
"""

from __future__ import annotations

import json
from pathlib import Path

INDEX_NAME = "fleet.json"  # a fleet-day folder's list of its deployment bundles
INDEX_FORMAT = "greencert-fleet-day/1"


def deployment_bundles(fleet_day: str | Path) -> list[Path]:
    """Bundles of a fleet-day folder, in the order of its index (or by name without one)."""
    folder = Path(fleet_day)
    index = folder / INDEX_NAME
    if index.is_file():
        entries = json.loads(index.read_text())["deployments"]
        return [folder / e["deployment"] for e in entries]
    return sorted(p.parent for p in folder.glob("*/manifest.yaml"))

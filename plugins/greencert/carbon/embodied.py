"""Embodied carbon, the SCI ``M`` term: M = TE x TS x RS per hardware item.

TE is the item's total embodied emissions, TS the time share (period length
over expected lifetime) and RS the resource share (the part of the item
reserved for this deployment). Without a declared inventory the packaged
defaults are used: one entry per GPU, and the host servers shared in
proportion to the GPUs used (an 8-GPU host serving 2 GPUs counts 2/8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from greencert.carbon.factors import embodied_profile
from greencert.carbon.models import HardwareItem
from greencert.units import parse_quantity, significant


@dataclass
class EmbodiedResult:
    total_g: float
    items: list[dict[str, Any]] = field(default_factory=list)
    basis: str = "declared"
    notes: list[str] = field(default_factory=list)


def default_inventory(
    gpu_count: int, gpu_type: str | None, profile: str | None = None
) -> tuple[list[HardwareItem], str, list[str]]:
    name, prof = embodied_profile(profile)
    gpu, host = prof["gpu"], prof["host"]
    per_host = int(host["gpus_per_host"])
    hosts = max(1, math.ceil(gpu_count / per_host))
    notes = []
    label = gpu_type or "GPU"
    if name == "ecologits" and "H100" not in label.upper():
        notes.append(f"no embodied figure for {label!r} in the defaults: the H100 figure is used as a proxy")
    items = [
        HardwareItem(
            item=f"{label} (default {name})",
            count=gpu_count,
            embodied=gpu["embodied"],
            lifetime=gpu["lifetime"],
            resource_share=1.0,
            source=gpu["source"],
        ),
        HardwareItem(
            item=f"{per_host}-GPU host server without GPUs (default {name})",
            count=hosts,
            embodied=host["embodied"],
            lifetime=host["lifetime"],
            resource_share=gpu_count / (hosts * per_host),
            source=host["source"] + f"; shared by GPU count ({gpu_count} of {hosts * per_host} slots)",
        ),
    ]
    return items, f"default profile {name}", notes


def embodied_carbon(items: list[HardwareItem], period_seconds: float, where: str) -> EmbodiedResult:
    """Amortise each item over the period; figures in gCO2e."""
    total = 0.0
    rows = []
    for n, item in enumerate(items):
        te = parse_quantity(item.embodied, "[carbon]", f"{where}[{n}].embodied").to("gCO2e").magnitude
        life = parse_quantity(item.lifetime, "[time]", f"{where}[{n}].lifetime").to("s").magnitude
        time_share = period_seconds / life
        m = item.count * te * time_share * item.resource_share
        total += m
        rows.append(
            {
                "item": item.item,
                "count": item.count,
                "embodied_per_unit": {"value": significant(te / 1000.0), "unit": "kgCO2e"},
                "lifetime": {"value": significant(life / 86400.0), "unit": "day"},
                "time_share": significant(time_share),
                "resource_share": significant(item.resource_share),
                "m": {"value": significant(m), "unit": "gCO2e"},
                "source": item.source,
                "tag": "sourced",
            }
        )
    return EmbodiedResult(total, rows)

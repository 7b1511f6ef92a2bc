"""Energy attribution to deployments that share a GPU (MIG slices) or a node.

The evidence stays raw: ``power.parquet`` holds each physical device's samples whole. The manifest's
optional ``attribution`` section says which share of each device's energy belongs to the bundle's
deployment and by which rule; :func:`attributed` applies it where per-device energies are summed
(``compute.metrics``). Shares are exact fractions (kept as text beside the float), so the shares of
one GPU over the deployments that hold it add up to one and their energies to the GPU's.

Rule ``mig_slice_share`` (docs/prometheus.md, "Attribution"): a MIG GPU's energy is split among its
GPU instances in proportion to their compute slices, the ``<n>g`` of ``GPU_I_PROFILE``
(``3g.40gb`` = 3 of the 7 slices of an A100/H100; NVIDIA MIG user guide, "Supported profiles").
A deployment's share of a GPU is the slices of the instances it holds over the slices of every
instance the exporter reported for that GPU in the period. A GPU without MIG instances is the
deployment's whole if it held it for the whole period, not at all if it never did. An instance or
GPU that changed hands inside the period is refused: splitting it by time is not implemented.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from greencert.errors import BundleError, SourceError

MIG_SLICE_SHARE = "mig_slice_share"
RULES = {
    MIG_SLICE_SHARE: "MIG GPU energy split by compute slices of GPU_I_PROFILE over the GPU's instances",
}
_SLICES_RE = re.compile(r"^(\d+)g\.")


def slices(profile: str, where: str) -> int:
    """Compute slices of a MIG profile name such as ``1g.10gb``, ``3g.40gb`` or ``1g.20gb+me``."""
    match = _SLICES_RE.match(profile or "")
    if not match or int(match.group(1)) < 1:
        raise SourceError(
            f"MIG profile {profile!r} is not of the form '<n>g.<memory>gb' (GPU_I_PROFILE): its slice "
            "count is unknown",
            where,
        )
    return int(match.group(1))


def _matches(labels: Mapping[str, str], match: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in match.items())


def _held_throughout(
    label_sets: list[Mapping[str, str]], match: Mapping[str, str], what: str, where: str
) -> bool:
    """Whether the deployment holds ``what`` for the whole period; holding it for part only is refused
    (mig_slice_share does not split by time)."""
    held = [_matches(labels, match) for labels in label_sets]
    if any(held) and not all(held):
        raise SourceError(
            f"{what} changed hands within the period (its workload labels change): rule mig_slice_share "
            "does not split by time",
            where,
        )
    return all(held)


def mig_slice_shares(
    devices: Mapping[str, dict[str, Any]], match: Mapping[str, str], where: str
) -> dict[str, Any]:
    """The manifest ``attribution`` section for one deployment.

    ``devices`` maps a device name to ``{"labels": [label dicts of its series],
    "mig": [{"gpu_instance", "profile", "holders": [label dicts over time]}]}``; ``match`` gives the
    workload labels (e.g. ``{namespace: chat}``) that mark what the deployment holds.
    """
    if not match:
        raise SourceError("attribution needs 'match': the labels that mark this deployment's GPUs", where)
    shares: dict[str, float] = {}
    detail: dict[str, Any] = {}
    for name, dev in devices.items():
        if not dev["mig"]:
            share = Fraction(int(_held_throughout(dev["labels"], match, f"GPU {name!r}", where)))
            detail[name] = {"fraction": str(share), "basis": "whole GPU" if share else "not held"}
        else:
            total = mine = 0
            instances = []
            for inst in dev["mig"]:
                n = slices(inst["profile"], f"{where}: device {name}, GPU instance {inst['gpu_instance']}")
                held = _held_throughout(
                    inst["holders"], match, f"MIG instance {inst['gpu_instance']} of GPU {name!r}", where
                )
                total += n
                mine += n * held
                instances.append(
                    {
                        "gpu_instance": inst["gpu_instance"],
                        "profile": inst["profile"],
                        "slices": n,
                        "held": held,
                    }
                )
            share = Fraction(mine, total)
            detail[name] = {
                "fraction": str(share),
                "slices_held": mine,
                "slices_reported": total,
                "instances": instances,
            }
        shares[name] = float(share)
    if not any(shares.values()):
        raise SourceError(
            f"no GPU or MIG instance carries the labels {dict(match)}: nothing to attribute", where
        )
    return {"rule": MIG_SLICE_SHARE, "match": dict(match), "shares": shares, "detail": detail}


def attributed(attribution: Any, devices: Sequence[str], per_device: np.ndarray, where: str) -> np.ndarray:
    """Rows of ``per_device`` (one per device, any trailing shape) times the device's share."""
    if attribution.rule not in RULES:
        raise BundleError(
            f"attribution rule {attribution.rule!r} is unknown; known: {', '.join(sorted(RULES))}", where
        )
    missing = [d for d in devices if d not in attribution.shares]
    if missing:
        raise BundleError(f"attribution gives no share for device(s) {', '.join(missing)}", where)
    share = np.array([attribution.shares[d] for d in devices], dtype=np.float64)
    return per_device * share.reshape((-1,) + (1,) * (per_device.ndim - 1))

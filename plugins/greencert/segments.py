"""Split a bundle at a change of serving engine version, model or GPUs (docs/uncertainty.md).

Energy per token depends on the software and hardware that served the tokens
(one vLLM upgrade cut it by about 40 % for the same model, ML.ENERGY), so a
period in which they changed is not one figure. A bundle declares the change in
its manifest::

    segments:
      - {start: 2026-01-01T00:00:00Z, end: 2026-01-01T13:00:00Z}
      - start: 2026-01-01T13:00:00Z
        end: 2026-01-02T00:00:00Z
        scope: {engine_version: "0.11.1"}
        reason: vLLM upgrade

Segments tile the period, on whole minutes. ``split_bundle`` writes one
ordinary bundle per segment: the same manifest with the segment as its period,
the scope changes applied and ``provenance.segment`` saying where it came from,
and every data file cut to the rows its validation accepts around the segment
(readings up to ``max_gap`` outside it, so the edges interpolate exactly as in
the whole bundle; grid hours that overlap it). Each segment bundle is then
certified on its own, with its own deterministic certificate id
(site.deployment.<segment start>-<segment end>) and its own evidence.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from greencert.atomic import swap_directory
from greencert.bundle.manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest
from greencert.bundle.series import _times_to_seconds
from greencert.errors import BundleError
from greencert.times import compact, stamp
from greencert.units import Q_
from greencert.yamlio import load_yaml_file

SCOPE_FIELDS = (
    "model",
    "hardware",
    "active_params_billions",
    "gpu_type",
    "gpu_count",
    "serving_engine",
    "engine_version",
    "precision",
    "driver_version",
)


def _read(path: Path) -> pa.Table:
    """The whole file, CSV columns as text so that the rows kept are written back unchanged."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pacsv

    header = path.open(encoding="utf-8").readline().strip().lstrip("\ufeff")
    names = [c.strip().strip('"') for c in header.split(",")]
    return pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
        ),
    )


def _write(path: Path, table: pa.Table) -> None:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, compression="zstd")
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(quoting_style="needed"))


def cut_file(src: Path, dst: Path, low: float, high: float) -> int:
    """Keep the rows with ``low <= timestamp <= high`` (Unix seconds); return how many."""
    table = _read(src)
    fmt = "parquet" if src.suffix.lower() == ".parquet" else "csv"
    t = _times_to_seconds(table.column("timestamp"), src.name, fmt)
    keep = (t >= low) & (t <= high)
    if not keep.any():
        raise BundleError(f"no rows between {low:.0f} and {high:.0f} for this segment", str(src))
    _write(dst, table.filter(pa.array(keep)) if not keep.all() else table)
    return int(keep.sum())


def _gap(spec: Any, default: float) -> float:
    return Q_(spec.max_gap).to("s").magnitude if spec.max_gap else default


def _windows(m: Manifest, start: float, end: float, default_gap: float) -> dict[str, tuple[float, float]]:
    """Rows each data file needs for [start, end): the window its validation accepts."""
    win: dict[str, tuple[float, float]] = {}

    def around(name: str, gap: float) -> None:
        win[name] = (start - gap, end + gap)

    around(m.power.file, _gap(m.power, default_gap))
    around(m.tokens.file, default_gap)
    for spec in [*m.meters, m.facility.meter, m.facility.it_meter]:
        if spec is not None:
            around(spec.file, _gap(spec, default_gap))
    if m.concurrency is not None:
        around(m.concurrency.file, _gap(m.power, default_gap))
    if m.requests is not None:
        around(m.requests.file, default_gap)  # a counter, like the tokens
    hours = (math.floor(start / 3600.0) * 3600.0, math.ceil(end / 3600.0) * 3600.0 - 3600.0)
    if m.grid.file:
        win[m.grid.file] = hours
    carbon = getattr(m, "carbon", None)
    if carbon is not None:
        # Hourly carbon inputs (instrument profiles, marginal rates): the hours the segment overlaps.
        for name in _carbon_files(carbon):
            win.setdefault(name, hours)
    return win


def _carbon_files(carbon: Any) -> list[str]:
    """Hourly files of the manifest's carbon section (see bundle.reader.read_carbon_series)."""
    files = [inst.profile_file for inst in carbon.instruments if inst.profile_file]
    if carbon.marginal is not None:
        files.append(carbon.marginal.file)
    return files


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_bundle(bundle_dir: Path | str, target_root: Path | str, default_gap: float) -> list[Path]:
    """Write one bundle per declared segment under ``target_root``; return their folders in order."""
    bundle_dir, target_root = Path(bundle_dir), Path(target_root)
    m = load_manifest(bundle_dir)
    if not m.segments:
        raise BundleError("the manifest declares no segments", str(bundle_dir / MANIFEST_NAME))
    raw = load_yaml_file(bundle_dir / MANIFEST_NAME, BundleError, "manifest")  # load_manifest checked it
    parent_sha = _sha256(bundle_dir / MANIFEST_NAME)
    target_root.mkdir(parents=True, exist_ok=True)
    scope = m.scope.model_dump(mode="json", exclude_none=True)
    previous = dict(scope)
    out = []
    for n, seg in enumerate(m.segments):
        start, end = seg.start.timestamp(), seg.end.timestamp()
        change = seg.scope.model_dump(mode="json", exclude_none=True)
        seg_scope = {**scope, **change}
        changed = {
            k: [previous.get(k), seg_scope.get(k)]
            for k in SCOPE_FIELDS
            if previous.get(k) != seg_scope.get(k)
        }
        previous = seg_scope
        manifest = {k: v for k, v in raw.items() if k != "segments"}
        manifest["scope"] = seg_scope
        manifest["period"] = {
            "start": stamp(seg.start),
            "end": stamp(seg.end),
        }
        manifest["provenance"] = {
            **(raw.get("provenance") or {}),
            "segment": {
                "index": n + 1,
                "of": len(m.segments),
                "period_of_bundle": {
                    "start": stamp(m.period.start),
                    "end": stamp(m.period.end),
                },
                "manifest_sha256_of_bundle": parent_sha,
                "changed_from_previous": changed if n else {},
                **({"reason": seg.reason} if seg.reason else {}),
            },
        }
        target = target_root / f"segment-{n + 1:02d}-{compact(seg.start)}-{compact(seg.end)}"
        where = f"{bundle_dir / MANIFEST_NAME} segments[{n}]"
        parse_manifest(manifest, where)  # never write a bundle that would be rejected
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target_root))
        try:
            (staging / MANIFEST_NAME).write_text(
                yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True), encoding="utf-8"
            )
            for name, (low, high) in _windows(m, start, end, default_gap).items():
                try:
                    cut_file(bundle_dir / name, staging / name, low, high)
                except BundleError as exc:
                    raise BundleError(f"{exc.problem} ({where})", exc.where) from None
            swap_directory(staging, target)  # renames only: no moment without a folder
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        out.append(target)
    return out


def certify_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path,
    scheme_path: str | Path | None = None,
    work_dir: str | Path | None = None,
    **options: Any,
) -> list[str]:
    """Certify a bundle, or each of its segments; return the published certificates' paths.

    ``options`` go to ``pipeline.certify`` unchanged (signing key, PDF...).
    """
    from greencert.grading import DEFAULT_SCHEME, load_scheme
    from greencert.pipeline import certify

    m = load_manifest(Path(bundle_dir))
    if not m.segments:
        return [certify(bundle_dir, out_dir, scheme_path, work_dir, **options)]
    scheme = load_scheme(Path(scheme_path) if scheme_path else DEFAULT_SCHEME)
    from greencert.files import work_directory

    with work_directory("segments") as tmp:
        root = Path(work_dir) / "segments" if work_dir else Path(tmp)
        paths = []
        for seg_bundle in split_bundle(bundle_dir, root, scheme.max_gap_seconds):
            seg_work = Path(work_dir) / "runs" / seg_bundle.name if work_dir else None
            paths.append(certify(seg_bundle, out_dir, scheme_path, seg_work, **options))
        return paths


__all__ = ["certify_bundle", "cut_file", "split_bundle"]

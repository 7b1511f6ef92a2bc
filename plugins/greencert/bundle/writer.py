"""Write evidence bundles (used by the simulator and the telemetry sources).

The bundle folder appears complete or not at all: files go into a temporary
sibling folder that is renamed into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml

from greencert.atomic import build_directory_atomically
from greencert.bundle.manifest import MANIFEST_NAME, parse_manifest
from greencert.times import STAMP_FORMAT


def _table(columns: dict[str, Any]) -> pa.Table:
    arrays = {}
    for name, values in columns.items():
        if name == "timestamp":
            secs = np.asarray(values, dtype=np.float64)
            arrays[name] = pa.array((np.round(secs * 1e6)).astype(np.int64), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            )
        elif name in ("device", "instance"):
            arrays[name] = pa.array(np.asarray(values).astype(str), pa.string()).dictionary_encode()
        else:
            arrays[name] = pa.array(np.asarray(values, dtype=np.float64))
    return pa.table(arrays)


def write_table(path: Path, columns: dict[str, Any] | pa.Table) -> None:
    """Write columns (or a ready Arrow table) as CSV (RFC 3339 timestamps) or Parquet, by the file suffix."""
    # Large generators build Arrow tables directly (dictionary devices from codes): converting
    # millions of device names through numpy strings would dominate their run time.
    table = columns if isinstance(columns, pa.Table) else _table(columns)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, compression="zstd")
    else:
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        cols = []
        for name in table.column_names:
            col = table.column(name)
            if name == "timestamp":
                col = pc.strftime(col, format=STAMP_FORMAT)
            elif pa.types.is_dictionary(col.type):
                col = col.cast(pa.string())
            cols.append(col)
        pacsv.write_csv(
            pa.table(cols, names=table.column_names),
            path,
            write_options=pacsv.WriteOptions(quoting_style="needed"),
        )


def write_bundle(
    target: Path, manifest: dict[str, Any], tables: dict[str, dict[str, Any] | pa.Table]
) -> Path:
    """Write ``manifest`` and ``tables`` (file name -> columns) as a bundle at ``target``, atomically."""
    parse_manifest(manifest, f"{target}/{MANIFEST_NAME}")  # never write a bundle we would reject
    target = Path(target)

    def build(staging: Path) -> None:
        (staging / MANIFEST_NAME).write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
        for name, columns in tables.items():
            write_table(staging / name, columns)

    build_directory_atomically(target, build)
    return target

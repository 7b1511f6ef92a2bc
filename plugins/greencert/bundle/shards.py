"""A device-keyed series read device shard by device shard, so memory does not grow with its rows.

The power series is the one that grows with a deployment (8,000 GPUs at 15 s are 46 M rows a day;
at 1 s, 690 M). Every statistic and integral GreenCert takes from it is per device (or a sum over
devices taken afterwards, docs/streaming.md), so it is read as **shards**: consecutive runs of
whole devices, about ``rows_per_shard`` rows each, one at a time. A shard is an ordinary
:class:`~greencert.bundle.reader.Series` of its devices, with the file's own row numbers, so every
check and every error message is the same as for a file read whole.

How a Parquet file is sharded, in two passes over its row groups:

1. the index: the ``device`` column only (dictionary-encoded, a few bytes a row), which gives every
   device name, its rows and whether each device's rows are one contiguous run of the file (what
   GreenCert's own sources, Prometheus's per-series exports and the fleet simulator write);
2. each shard: the row groups that hold its rows, sliced to them. A row group that straddles two
   shards is decoded once (the last one read is kept for the next shard).

A file read whole instead, as one shard (memory then grows with its rows, as before): a CSV file,
a file no larger than one shard, and a file whose devices' rows are interleaved (a time-ordered
export); docs/streaming.md says so and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from greencert.bundle.series import (
    Series,
    check_parquet_schema,
    check_series_file,
    read_series,
    series_of_table,
)
from greencert.errors import BundleError

# About 1 M rows a shard: the shard's arrays and the stages' temporaries stay near 150 MB, and a
# shard is still large enough that per-shard overheads (row-group slicing, a few dozen numpy calls)
# are a small share of its time (docs/performance.md, "Streaming").
ROWS_PER_SHARD = 1 << 20


@dataclass
class DeviceShards:
    """One device-keyed series file, read as shards of whole devices (see the module docstring).

    ``devices`` lists every device of the file, sorted (the order of every per-device output);
    ``ranges`` are the shards' file-row ranges in file order. ``whole`` holds the file when it is
    read as one shard.
    """

    path: Path
    file_format: str
    devices: list[str]
    n_rows: int
    ranges: list[tuple[int, int]]
    numeric: tuple[str, ...]
    group_by: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    whole: Series | None = None
    sha256: str | None = None  # of the file, set by open_bundle once every file is hashed
    # Folds of this series under a spec (compute/fold.py), so every stage of a process shares one.
    folds: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    _last_group: tuple[int, pa.Table] | None = field(default=None, repr=False)

    @classmethod
    def of_series(cls, series: Series, group_by: str = "device") -> DeviceShards:
        """A series already in memory (a test's, or a simulation's) as one shard."""
        return cls(
            Path(series.file),
            series.file_format,
            list(series.devices),
            series.n_rows,
            [(0, series.n_rows)],
            tuple(series.values),
            group_by,
            (),
            (),
            whole=series,
        )

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def n_shards(self) -> int:
        return len(self.ranges)

    def shards(self) -> Iterator[Series]:
        """Each shard as a :class:`Series`, in file order (the whole file when it is one shard)."""
        if self.whole is not None:
            yield self.whole
            return
        for lo, hi in self.ranges:
            yield self.shard(lo, hi)
        self._last_group = None

    def shard(self, lo: int, hi: int) -> Series:
        """Rows ``[lo, hi)`` of the file (whole devices) as a :class:`Series`."""
        if self.whole is not None:
            return self.whole
        import pyarrow.parquet as pq

        handle = pq.ParquetFile(self.path, read_dictionary=[self.group_by])
        meta = handle.metadata
        pieces = []
        begin = 0
        for g in range(meta.num_row_groups):
            end = begin + meta.row_group(g).num_rows
            if end > lo and begin < hi:
                if self._last_group is not None and self._last_group[0] == g:
                    table = self._last_group[1]
                else:
                    try:
                        table = handle.read_row_group(g, use_threads=False)
                    except (pa.ArrowInvalid, OSError) as exc:
                        raise BundleError(f"Parquet file cannot be read ({exc})", str(self.path)) from None
                    self._last_group = (g, table)
                a, b = max(lo, begin) - begin, min(hi, end) - begin
                pieces.append(table.slice(a, b - a))
            begin = end
            if begin >= hi:
                break
        table = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
        return series_of_table(table, self.path, self.file_format, self.numeric, self.group_by, row_offset=lo)

    def reader(self) -> DeviceShards:
        """This index without cached rows: what a pool worker needs to read its shards (pickled small)."""
        if self.whole is not None:
            raise ValueError("a file read whole has no shards to hand out")
        return DeviceShards(
            self.path,
            self.file_format,
            [],
            self.n_rows,
            [],
            self.numeric,
            self.group_by,
            self.required,
            self.optional,
        )

    def shard_of(self, device: int) -> tuple[Series, int]:
        """The shard holding device number ``device`` (of ``devices``) and its number in that shard.

        Used to name a failing row after validation, so only the failing device's shard is read again.
        """
        if self.whole is not None:
            return self.whole, device
        name = self.devices[device]
        for lo, hi in self.ranges:
            series = self.shard(lo, hi)
            if name in series.devices:
                self._last_group = None
                return series, series.devices.index(name)
        raise KeyError(name)  # every device is in one shard (index pass)


def read_device_shards(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...],
    numeric: tuple[str, ...],
    group_by: str,
    what: str,
    rows_per_shard: int = ROWS_PER_SHARD,
) -> DeviceShards:
    """Index a device-keyed series file for reading in shards (or read it whole; module docstring)."""
    if rows_per_shard < 1:
        raise ValueError("rows_per_shard must be positive")
    file_format = check_series_file(path, what)

    def whole() -> DeviceShards:
        series = read_series(path, required, optional, numeric, group_by, what)
        return DeviceShards(
            path,
            file_format,
            list(series.devices),
            series.n_rows,
            [(0, series.n_rows)],
            numeric,
            group_by,
            required,
            optional,
            whole=series,
        )

    if file_format != "parquet":
        return whole()
    import pyarrow.parquet as pq

    schema = check_parquet_schema(path, required, optional, numeric)
    if group_by not in schema.names:  # one meter for the whole file (no device column): one device
        return whole()
    try:
        handle = pq.ParquetFile(path, read_dictionary=[group_by])
    except (pa.ArrowInvalid, OSError) as exc:
        raise BundleError(f"not a readable Parquet file ({exc})", str(path)) from None
    meta = handle.metadata
    if meta.num_rows <= rows_per_shard:
        return whole()
    # Pass 1: runs of one device in file order, from the device column alone.
    run_names: list[str] = []
    run_rows: list[int] = []
    seen: set[str] = set()
    offset = 0
    for g in range(meta.num_row_groups):
        try:
            column = handle.read_row_group(g, columns=[group_by], use_threads=False).column(group_by)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BundleError(f"Parquet file cannot be read ({exc})", str(path)) from None
        chunk = column.combine_chunks()
        if chunk.null_count:
            first = offset + int(np.argmax(chunk.is_null().to_numpy(zero_copy_only=False)))
            raise BundleError(f"column {group_by!r} is empty", f"{path} row {first} column {group_by}")
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        names = chunk.dictionary.to_pylist()
        if codes.size:
            starts = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1])
            lengths = np.diff(np.append(starts, codes.size))
            for code, length in zip(codes[starts].tolist(), lengths.tolist(), strict=True):
                name = str(names[code])
                if run_names and run_names[-1] == name:
                    run_rows[-1] += length
                    continue
                if name in seen:
                    # A device's rows are not one run (interleaved devices): read the file whole.
                    return whole()
                seen.add(name)
                run_names.append(name)
                run_rows.append(length)
        offset += codes.size
    # Shards: consecutive runs, closed once they reach rows_per_shard.
    ranges: list[tuple[int, int]] = []
    lo = row = 0
    for length in run_rows:
        row += length
        if row - lo >= rows_per_shard:
            ranges.append((lo, row))
            lo = row
    if row > lo:
        ranges.append((lo, row))
    return DeviceShards(
        path, file_format, sorted(run_names), offset, ranges, numeric, group_by, required, optional
    )

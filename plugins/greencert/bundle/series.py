"""Read one series file of an evidence bundle into numpy arrays.

Files are CSV or Parquet. Columns are checked before any data row is parsed,
so a file of garbage fails within its first kilobytes instead of being read
into memory. Everything is turned into plain numpy arrays (times as float64
Unix seconds, devices as int32 codes) because every later stage works
column-wise on whole arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from greencert.bundle.manifest import bundle_file
from greencert.errors import BundleError

HEADER_PROBE_BYTES = 64 * 1024
# Per-file ceiling: 46 M rows of Parquet are ~0.4 GB; a CSV three times larger is still sane.
MAX_FILE_BYTES = 8 * 1024**3

POWER_COLUMNS = ("timestamp", "device", "value")
TOKEN_COLUMNS = ("timestamp", "output_tokens", "input_tokens")
# Optional token-type counters (OpenTelemetry GenAI: cached input and reasoning output tokens are
# parts of the input and output tokens); reported in load_regime.tokens.by_type, never graded.
TOKEN_TYPE_COLUMNS = ("cached_input_tokens", "reasoning_output_tokens")
GRID_COLUMNS = ("timestamp", "intensity")
# Provenance columns a grid API client writes (docs/carbon.md); not needed for the figures.
GRID_OPTIONAL_COLUMNS = ("is_estimated", "estimation_method", "emission_factor_type", "filled")
METER_COLUMNS = ("timestamp", "value")
# Completed-requests counter (manifest ``requests:``), a cumulative counter like the tokens.
REQUEST_COLUMNS = ("timestamp", "requests")
# Hourly files of the manifest's carbon section: instrument delivery profiles, marginal rates.
PROFILE_COLUMNS = ("timestamp", "energy")
MARGINAL_COLUMNS = ("timestamp", "rate")
INTENSITY = "[carbon] / [energy]"


@dataclass
class Series:
    """One series file as arrays, grouped by device and in file order within a device.

    ``row`` holds each sample's 0-based data-row number in the file, so that
    errors found after grouping still name the row a person can open.
    """

    file: str
    t: np.ndarray
    device_codes: np.ndarray
    devices: list[str]
    values: dict[str, np.ndarray]
    row: np.ndarray
    file_format: str
    # Arrays derived from the (never modified) arrays above, such as step lengths and
    # integrals, so validation and computation in one process compute them once.
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return int(self.t.size)

    def device_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last row index of each device (rows are grouped by device)."""
        bounds = self.cache.get("device_bounds")
        if bounds is None:
            # Search keys of the codes' own dtype: int64 keys would make numpy convert the
            # whole (int32) code column on every call.
            keys = np.arange(len(self.devices), dtype=self.device_codes.dtype)
            bounds = (
                np.searchsorted(self.device_codes, keys, side="left"),
                np.searchsorted(self.device_codes, keys, side="right"),
            )
            self.cache["device_bounds"] = bounds
        return bounds[0].copy(), bounds[1].copy()

    def where_row(self, index: int) -> str:
        """Human location of grouped row ``index``: file, line (CSV) or row (Parquet)."""
        data_row = int(self.row[index])
        if self.file_format == "csv":
            return f"{self.file} line {data_row + 2}"
        return f"{self.file} row {data_row}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_series_file(path: Path, what: str) -> str:
    # Bundle file names are plain names (manifest.py), so the folder that holds the file is the bundle.
    bundle_file(path.parent, path.name, what)
    if not path.is_file():
        raise BundleError(f"{what} file is missing", str(path))
    size = path.stat().st_size
    if size == 0:
        raise BundleError(f"{what} file is empty (0 bytes)", str(path))
    if size > MAX_FILE_BYTES:
        raise BundleError(f"{what} file is {size} bytes, over the {MAX_FILE_BYTES} byte limit", str(path))
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise BundleError(f"{what} file must be .csv or .parquet, not {suffix or 'no suffix'}", str(path))
    return suffix[1:]


def _probe_csv_header(path: Path, required: tuple[str, ...], optional: tuple[str, ...]) -> list[str]:
    with open(path, "rb") as handle:
        head = handle.read(HEADER_PROBE_BYTES)
    newline = head.find(b"\n")
    if newline < 0:
        raise BundleError(
            f"no header line in the first {len(head)} bytes (expected columns {', '.join(required)})",
            f"{path} line 1",
        )
    try:
        header = head[:newline].decode("utf-8").strip().lstrip("\ufeff")
    except UnicodeDecodeError:
        raise BundleError("header line is not UTF-8 text", f"{path} line 1") from None
    columns = [c.strip().strip('"') for c in header.split(",")]
    if len(columns) == 1 and any(sep in header for sep in (";", "\t", "|")):
        raise BundleError(
            f"header {header[:80]!r} is not comma-separated (wrong delimiter?)",
            f"{path} line 1",
        )
    _check_columns(columns, required, optional, f"{path} line 1")
    if not head[newline + 1 :].strip():
        raise BundleError("file has a header but no data rows", str(path))
    return columns


def _check_columns(
    columns: list[str], required: tuple[str, ...], optional: tuple[str, ...], where: str
) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise BundleError(f"missing column(s) {', '.join(missing)}; found {', '.join(columns)[:200]}", where)
    unknown = [c for c in columns if c not in required and c not in optional]
    if unknown:
        raise BundleError(f"unexpected column(s) {', '.join(unknown)[:200]}", where)
    dupes = {c for c in columns if columns.count(c) > 1}
    if dupes:
        raise BundleError(f"duplicated column(s) {', '.join(sorted(dupes))}", where)


def _read_csv(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], numeric: tuple[str, ...]
) -> pa.Table:
    import pyarrow.csv as pacsv

    columns = _probe_csv_header(path, required, optional)
    _check_last_line(path)
    types = {c: pa.string() for c in columns}
    for c in numeric:
        if c in columns:  # optional numeric columns (token types) may be absent
            types[c] = pa.float64()
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=16 << 20),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _locate_csv_error(path, columns, exc) from None


def _check_last_line(path: Path) -> None:
    """A CSV whose last line has no line ending was cut short: its last value may be cut too.

    ('...,450' truncated to '...,4' still parses, so the missing line ending is the
    only trace of the truncation.)
    """
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        newlines = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    raise BundleError(
        "the last line has no line ending: the file looks truncated (an interrupted copy?)",
        f"{path} line {newlines + 1}",
    )


def _locate_csv_error(path: Path, columns: list[str], exc: Exception) -> BundleError:
    """Turn Arrow's CSV error into one that names the line (Arrow reports it only single-threaded)."""
    import re

    import pyarrow.csv as pacsv

    text = str(exc)
    bad_value = re.search(r"column #(\d+): CSV conversion error to (\w+): invalid value '(.*)'$", text, re.S)
    if bad_value:
        name = columns[int(bad_value.group(1))] if int(bad_value.group(1)) < len(columns) else "?"
        value = bad_value.group(3)
        raw = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns}, include_columns=[name]
            ),
        ).column(name)
        first = pc.index(raw, value).as_py()
        where = f"{path} line {first + 2} column {name}" if first >= 0 else f"{path} column {name}"
        return BundleError(f"value {value!r} is not a number", where)
    if "Row #" not in text:
        try:
            pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=False),
                convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as again:
            text = str(again)
    row = re.search(r"Row #(\d+): (.*)", text, re.S)
    if row:
        return BundleError(f"malformed CSV row: {row.group(2)[:200]}", f"{path} line {row.group(1)}")
    return BundleError(f"malformed CSV: {text[:300]}", str(path))


def check_parquet_schema(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], numeric: tuple[str, ...]
) -> pa.Schema:
    """The footer's schema, every column named and typed as the series needs; BundleError otherwise."""
    import pyarrow.parquet as pq

    try:
        # The footer only; the file is opened again below with the dictionary columns it has.
        schema = pq.ParquetFile(path).schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        raise BundleError(f"not a readable Parquet file ({exc})", str(path)) from None
    _check_columns(list(schema.names), required, optional, str(path))
    for name in (n for n in numeric if n in schema.names):
        typ = schema.field(name).type
        if not (pa.types.is_floating(typ) or pa.types.is_integer(typ)):
            raise BundleError(f"column {name!r} has type {typ}, expected a number", f"{path} column {name}")
    ts_type = schema.field("timestamp").type
    if not (pa.types.is_timestamp(ts_type) or pa.types.is_floating(ts_type) or pa.types.is_integer(ts_type)):
        raise BundleError(
            f"column 'timestamp' has type {ts_type}, expected a timestamp with time zone or Unix seconds",
            f"{path} column timestamp",
        )
    if pa.types.is_timestamp(ts_type) and ts_type.tz is None:
        raise BundleError("column 'timestamp' has no time zone", f"{path} column timestamp")
    for name in ("device", "instance"):
        if name in schema.names:
            typ = schema.field(name).type
            if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_dictionary(typ)):
                raise BundleError(f"column {name!r} has type {typ}, expected text", f"{path} column {name}")
    return schema


def _read_parquet(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], numeric: tuple[str, ...]
) -> pa.Table:
    import pyarrow.parquet as pq

    schema = check_parquet_schema(path, required, optional, numeric)
    try:
        # ParquetFile rather than read_table (whose dataset layer cost more than small files'
        # decoding), on this thread only: bundles are read in parallel by the callers (a fleet
        # run's reader threads and processes), and pyarrow's own pool spent more CPU than it saved.
        table = pq.ParquetFile(
            path, read_dictionary=[c for c in ("device", "instance") if c in schema.names]
        ).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BundleError(f"Parquet file cannot be read ({exc})", str(path)) from None
    if table.num_rows == 0:
        raise BundleError("file has no data rows", str(path))
    return table


_OFFSET_RE = r"(Z|z|[+-]\d\d:?\d\d)$"
# Integers above 2**53 have no exact float64: a counter there could not be integrated exactly.
MAX_EXACT_INTEGER = 2**53


def _to_float64(
    column: pa.ChunkedArray, where: str, name: str, file_format: str, row_offset: int = 0
) -> np.ndarray:
    """A numeric column as float64; integers too large for float64 (uint64/int64 beyond 2**53) are refused.

    ``row_offset``: the file's data-row number of the column's first entry (a device shard's rows).
    """
    typ = column.type
    if typ in (pa.int64(), pa.uint64()):
        big = pc.greater(column, pa.scalar(MAX_EXACT_INTEGER, typ))
        if pa.types.is_signed_integer(typ):
            big = pc.or_(big, pc.less(column, pa.scalar(-MAX_EXACT_INTEGER, typ)))
        if pc.any(big).as_py():
            first = int(pc.index(big, True).as_py())
            line = f"line {first + row_offset + 2}" if file_format == "csv" else f"row {first + row_offset}"
            raise BundleError(
                f"integer {column[first].as_py()} in column {name!r} ({typ}) is beyond 2**53, "
                "the largest integer a float64 holds exactly",
                f"{where} {line} column {name}",
            )
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def _times_to_seconds(
    column: pa.ChunkedArray, where: str, file_format: str, row_offset: int = 0
) -> np.ndarray:
    """RFC 3339 with offset, or Unix seconds; returns float64 Unix seconds (NaN where null)."""
    typ = column.type
    if pa.types.is_timestamp(typ):
        per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[typ.unit]
        # The stored integers in their own unit (a zero-copy view): converting microseconds to
        # nanoseconds first cost a pass and a copy, and ns counts above 2**53 round on the way to
        # float64 while us counts of any plausible date are exact.
        ticks = column.cast(pa.int64())
        if ticks.null_count == 0:
            # int64 -> float64 happens inside the division: one pass.
            return np.divide(ticks.to_numpy(), per_second)
        return ticks.to_numpy(zero_copy_only=False).astype(np.float64) / per_second
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        return _to_float64(column, where, "timestamp", file_format, row_offset)
    # Text: numbers are Unix seconds, everything else must be RFC 3339 with an offset.
    text = pc.utf8_trim_whitespace(column)
    numeric_mask = pc.match_substring_regex(text, r"^[+-]?\d+(\.\d*)?([eE][+-]?\d+)?$")
    if pc.all(numeric_mask).as_py():
        return pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    has_offset = pc.match_substring_regex(text, _OFFSET_RE)
    bad = pc.invert(pc.or_(has_offset, numeric_mask))
    if pc.any(bad).as_py():
        first = int(pc.index(bad, True).as_py())
        value = text[first].as_py()
        line = f"line {first + row_offset + 2}" if file_format == "csv" else f"row {first + row_offset}"
        problem = (
            "timestamp has no time zone offset (write Z or +00:00)"
            if value and value[:4].isdigit() and "-" in value
            else "timestamp is neither RFC 3339 nor Unix seconds"
        )
        raise BundleError(f"{problem}: {value!r}", f"{where} {line} column timestamp")
    import pandas as pd

    try:
        parsed = pd.to_datetime(pd.Series(text.to_numpy(zero_copy_only=False)), format="ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"timestamp cannot be parsed: {exc}", f"{where} column timestamp") from None
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return ns.astype(np.float64) / 1e9


def _codes(table: pa.Table, name: str | None, default: str) -> tuple[np.ndarray, list[str]]:
    if name is None or name not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.int32), [default]
    col = table.column(name)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    # Unify dictionaries across chunks so codes are comparable.
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries().combine_chunks()
    dictionary = [str(v) for v in col.dictionary.to_pylist()]
    if not col.null_count:
        # Usual case (every row names a device): no per-row work beyond one count,
        # and none at all when the dictionary is already sorted and fully used.
        raw = col.indices.to_numpy(zero_copy_only=False)
        used = np.bincount(raw, minlength=len(dictionary)) > 0
        if used.all():
            order = np.argsort(np.array(dictionary, dtype=object), kind="stable")
            if (order == np.arange(order.size)).all():
                return raw.astype(np.int32, copy=False), dictionary
            remap = np.empty(len(dictionary), dtype=np.int32)
            remap[order] = np.arange(len(dictionary), dtype=np.int32)
            return remap[raw], [dictionary[i] for i in order]
        # A dictionary listing values no row uses (a device shard's slice of a row group, or a
        # Parquet writer's): one gather maps the used ones to their sorted positions.
        keep = np.flatnonzero(used)
        names = [dictionary[i] for i in keep]
        order = np.argsort(np.array(names, dtype=object), kind="stable")
        remap = np.full(len(dictionary), -1, dtype=np.int32)
        remap[keep[order]] = np.arange(keep.size, dtype=np.int32)
        return remap[raw], [names[i] for i in order]
    indices = col.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if col.null_count:
        indices = np.where(col.is_null().to_numpy(zero_copy_only=False), -1, indices)
    # A Parquet dictionary may list values no row uses: drop them.
    used = np.bincount(indices[indices >= 0], minlength=len(dictionary)) > 0
    if not used.all():
        keep = np.flatnonzero(used)
        squeeze = np.full(len(dictionary), -1, dtype=np.int64)
        squeeze[keep] = np.arange(keep.size)
        indices = np.where(indices >= 0, squeeze[np.maximum(indices, 0)], -1)
        dictionary = [dictionary[i] for i in keep]
    # Sort device names so codes (and every output) do not depend on row order.
    order = np.argsort(np.array(dictionary, dtype=object), kind="stable")
    remap = np.empty(len(dictionary), dtype=np.int32)
    remap[order] = np.arange(len(dictionary), dtype=np.int32)
    codes = np.where(indices >= 0, remap[np.maximum(indices, 0)], -1).astype(np.int32)
    return codes, [dictionary[i] for i in order]


def read_series(
    path: Path,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
    numeric: tuple[str, ...] = (),
    group_by: str | None = None,
    what: str = "series",
) -> Series:
    """Read one series file into a :class:`Series`, grouped by ``group_by`` if given."""
    file_format = check_series_file(path, what)
    reader = _read_csv if file_format == "csv" else _read_parquet
    table = reader(path, required, optional, numeric)
    if table.num_rows == 0:
        raise BundleError("file has a header but no data rows", str(path))
    return series_of_table(table, path, file_format, numeric, group_by)


def series_of_table(
    table: pa.Table,
    path: Path,
    file_format: str,
    numeric: tuple[str, ...],
    group_by: str | None,
    row_offset: int = 0,
) -> Series:
    """A :class:`Series` of ``table``: the whole file, or the rows of a device shard from ``row_offset`` on.

    Errors name the full path (like every other reader error): in a fleet's logs "power.csv"
    alone is ambiguous; rows are the file's own data-row numbers.
    """
    where = str(path.name)
    t = _times_to_seconds(table.column("timestamp"), str(path), file_format, row_offset)
    codes, devices = _codes(table, group_by, default="all")
    if (codes < 0).any():
        first = int(np.argmax(codes < 0)) + row_offset
        line = f"line {first + 2}" if file_format == "csv" else f"row {first}"
        raise BundleError(f"column {group_by!r} is empty", f"{path} {line} column {group_by}")
    values = {
        name: _to_float64(table.column(name), str(path), name, file_format, row_offset)
        for name in numeric
        if name in table.column_names
    }
    del table
    row = np.arange(row_offset, row_offset + t.size, dtype=np.int64)
    if codes.size > 1 and (codes[1:] < codes[:-1]).any():
        # Devices interleaved: group them, keeping file order within a device.
        order = np.argsort(codes, kind="stable")
        codes, t, row = codes[order], t[order], row[order]
        values = {k: v[order] for k, v in values.items()}
    return Series(where, t, codes, devices, values, row, file_format)

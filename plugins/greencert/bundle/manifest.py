"""``manifest.yaml``: scope, period, units, facility and grid settings.

Parsed with pydantic models that forbid unknown keys, so that a typo such as
``unti: W`` is an error that names the key instead of a silently ignored line.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from greencert.carbon.models import CarbonSpec
from greencert.errors import BundleError
from greencert.names import check_identifier, check_site
from greencert.yamlio import parse_yaml

if TYPE_CHECKING:  # pint loads only when a manifest is parsed
    import pint

FORMAT: Final = "greencert-bundle/1"
MANIFEST_NAME = "manifest.yaml"
# Manifests are small; anything bigger is not a manifest (and must not be parsed into memory).
MAX_MANIFEST_BYTES = 1_000_000

# Periods: the calendar years a certificate may cover (its expiry must still be a date) and the
# longest period (hourly arrays of the whole period are held in memory).
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000
MAX_PERIOD = dt.timedelta(days=1100)
# The start of an HTML/XML tag, comment or processing instruction ("a < b" stays allowed).
_MARKUP_RE = re.compile(r"<\s*[A-Za-z/!?][^>]{0,20}>?")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_label(value: str, what: str) -> str:
    """Free-text labels are plain text: no control characters and no markup tags.

    Outputs escape every label anyway; refusing tags at the input as well means a
    label that would only make sense as HTML never reaches a certificate at all.
    """
    for pos, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf") and char not in "\t":
            raise ValueError(f"{what} contains control character U+{ord(char):04X} at position {pos}")
    tag = _MARKUP_RE.search(value)
    if tag:
        raise ValueError(
            f"{what} contains markup {tag.group(0)!r} at position {tag.start()} (labels are plain text)"
        )
    if len(value) > 200:
        raise ValueError(f"{what} is longer than 200 characters")
    return value


class Scope(_Strict):
    site: str
    deployment: str
    model: str
    hardware: str
    active_params_billions: Annotated[float, Field(gt=0, le=100_000)]
    gpu_type: str | None = None
    gpu_count: Annotated[int, Field(ge=1, le=10_000_000)] | None = None  # JSON-safe integer
    serving_engine: str | None = None
    engine_version: str | None = None
    precision: str | None = None
    driver_version: str | None = None
    zone: str | None = None

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        return check_site(v, "scope.site")

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, v: str) -> str:
        return check_identifier(v, "scope.deployment")

    @field_validator(
        "model",
        "hardware",
        "gpu_type",
        "serving_engine",
        "engine_version",
        "precision",
        "driver_version",
        "zone",
    )
    @classmethod
    def _labels(cls, v: str | None, info) -> str | None:
        return None if v is None else check_label(v, f"scope.{info.field_name}")


def _to_utc(value: object, where: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{where} {value!r} is not an RFC 3339 timestamp") from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            stamp = dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{where} {value!r} is not a Unix time a calendar can hold") from None
    else:
        raise ValueError(f"{where} {value!r} is not a timestamp")
    if stamp.tzinfo is None:
        raise ValueError(f"{where} {value!r} has no time zone offset (write Z or +00:00)")
    try:
        stamp = stamp.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError(f"{where} {value!r} is beyond the calendar once converted to UTC") from None
    if not EARLIEST_YEAR <= stamp.year <= LATEST_YEAR:
        # The certificate's expiry (period end + the scheme's validity) and every hour of the period
        # must be representable: year 9999 + 6 months is not a date.
        raise ValueError(f"{where} {stamp.isoformat()} is outside the years {EARLIEST_YEAR}-{LATEST_YEAR}")
    return stamp


class Period(_Strict):
    start: dt.datetime
    end: dt.datetime

    @field_validator("start", "end", mode="before")
    @classmethod
    def _utc(cls, v: object, info) -> dt.datetime:
        return _to_utc(v, f"period.{info.field_name}")

    @model_validator(mode="after")
    def _positive(self) -> Period:
        if self.end <= self.start:
            raise ValueError(
                f"period.end {self.end.isoformat()} is not after period.start {self.start.isoformat()} "
                "(the period must have a positive length)"
            )
        if self.end - self.start > MAX_PERIOD:
            # Every stage holds per-hour arrays of the period: a millennium would exhaust memory.
            raise ValueError(
                f"period from {self.start.isoformat()} to {self.end.isoformat()} is longer than "
                f"{MAX_PERIOD.days} days (certify shorter periods)"
            )
        return self

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


class SeriesSpec(_Strict):
    """A metered series: ``gauge`` = power in a pint power unit, ``counter`` = cumulative energy."""

    file: str
    kind: Literal["gauge", "counter"]
    unit: str
    # Longest interval between two samples that is still bridged (gauges); default from the scheme.
    max_gap: str | None = None
    # Physical ceiling per device, a pint power quantity such as "1500 W"; default from the scheme.
    max_device_power: str | None = None
    # Relative accuracy of the meter (e.g. 0.05 for +-5 %); default depends on the meter class.
    accuracy: Annotated[float, Field(gt=0, lt=1)] | None = None
    meter_class: Literal["gpu_sensor", "node_meter", "pdu", "revenue_meter"] | None = None
    # Devices that must be present; a listed device without samples is an error.
    devices: list[str] | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file_name(v)

    # Units are checked when the manifest is read, so that a typo or a dimension mismatch names
    # the manifest key before any data is read, and the writer refuses to write such a bundle.
    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str, info) -> str:
        kind = info.data.get("kind")
        if kind is not None:
            _check_unit(v, "[power]" if kind == "gauge" else "[energy]")
        return v

    @field_validator("max_gap")
    @classmethod
    def _max_gap(cls, v: str | None) -> str | None:
        return None if v is None else _check_quantity(v, "[time]")

    @field_validator("max_device_power")
    @classmethod
    def _max_power(cls, v: str | None) -> str | None:
        return None if v is None else _check_quantity(v, "[power]")


class MeterSpec(SeriesSpec):
    """An additional metered layer (GPU energy counter, node meter, PDU...) for cross-checks and reconciliation."""

    name: str
    layer: Literal["gpu", "node", "pdu", "facility"]
    # True: this meter measures the same devices as ``power`` (e.g. DCGM's energy counter beside its
    # power gauge); per device, its energy must match the integrated power within the tolerance
    # (default from the scheme, else 5 %), else the certificate carries a finding.
    crosscheck: bool = False
    crosscheck_tolerance: Annotated[float, Field(gt=0, lt=1)] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_identifier(v, "meters[].name", registry_name=False)


class TokensSpec(_Strict):
    file: str

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file_name(v)


class _InstanceSeriesSpec(_Strict):
    """A per-instance series file and the metric it was read from (recorded on the certificate)."""

    key: ClassVar[str] = "series"  # manifest key, named in errors

    file: str
    metric: str | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _check_file_name(v)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        return None if v is None else check_label(v, f"{cls.key}.metric")


class ConcurrencySpec(_InstanceSeriesSpec):
    """Requests in flight per serving instance (e.g. vLLM ``vllm:num_requests_running``).

    Columns ``timestamp, value`` and optionally ``instance``. Used only to disclose
    the load regime on the certificate (docs/uncertainty.md), never in a figure.
    """

    key: ClassVar[str] = "concurrency"


class RequestsSpec(_InstanceSeriesSpec):
    """Cumulative count of completed requests per serving instance (e.g. vLLM
    ``vllm:request_success_total``), for the figures per 1,000 queries (docs/boundary.md).

    Columns ``timestamp, requests`` and optionally ``instance``; read like the token counters.
    """

    key: ClassVar[str] = "requests"


class IdleCapacitySpec(_Strict):
    """Machines provisioned for the deployment but not serving (docs/boundary.md).

    ``metered``: every provisioned device is in the power evidence, nothing is added.
    ``declared``: ``share`` of the serving machines' (IT) energy, with its ``source``.
    Without this key scheme 2026.3 adds an estimated share (boundary-2026.3.yaml).
    """

    basis: Literal["metered", "declared"]
    share: Annotated[float, Field(ge=0, le=1)] | None = None
    source: str | None = None

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        return None if v is None else check_label(v, "idle_capacity.source")

    @model_validator(mode="after")
    def _share(self) -> IdleCapacitySpec:
        if self.basis == "declared" and (self.share is None or not self.source):
            raise ValueError("idle_capacity.basis declared needs share (of IT energy) and source")
        if self.basis == "metered" and self.share not in (None, 0.0):
            raise ValueError(
                "idle_capacity.basis metered means every provisioned device is metered: no share to add"
            )
        return self


class ScopeChange(_Strict):
    """Scope fields that change at a segment boundary; unset fields keep the bundle's scope."""

    model: str | None = None
    hardware: str | None = None
    active_params_billions: Annotated[float, Field(gt=0, le=100_000)] | None = None
    gpu_type: str | None = None
    gpu_count: Annotated[int, Field(ge=1, le=10_000_000)] | None = None  # JSON-safe integer
    serving_engine: str | None = None
    engine_version: str | None = None
    precision: str | None = None
    driver_version: str | None = None

    @field_validator(
        "model", "hardware", "gpu_type", "serving_engine", "engine_version", "precision", "driver_version"
    )
    @classmethod
    def _labels(cls, v: str | None, info) -> str | None:
        return None if v is None else check_label(v, f"segments[].scope.{info.field_name}")


class Segment(_Strict):
    """Part of the period certified on its own, because the engine version, model or GPUs changed."""

    start: dt.datetime
    end: dt.datetime
    scope: ScopeChange = Field(default_factory=ScopeChange)
    reason: str | None = None

    @field_validator("start", "end", mode="before")
    @classmethod
    def _utc(cls, v: object, info) -> dt.datetime:
        stamp = _to_utc(v, f"segments[].{info.field_name}")
        # Certificate ids carry minutes: a boundary inside a minute would give two ids the same name.
        if stamp.second or stamp.microsecond:
            raise ValueError(f"segments[].{info.field_name} {stamp.isoformat()} is not on a whole minute")
        return stamp

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        return None if v is None else check_label(v, "segments[].reason")


class Wue(_Strict):
    """Declared water usage effectiveness: site water / IT energy (ISO/IEC 30134-9), in L/kWh."""

    value: Annotated[float, Field(ge=0, le=100)]
    source: str
    period: str | None = None  # the period the WUE was measured over, as the operator states it

    @field_validator("source", "period")
    @classmethod
    def _labels(cls, v: str | None, info) -> str | None:
        return None if v is None else check_label(v, f"facility.wue.{info.field_name}")


class OffsiteWater(_Strict):
    """Water consumed off site to generate the electricity (L/kWh of facility energy)."""

    intensity: Annotated[float, Field(ge=0, le=1000)]
    source: str

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return check_label(v, "facility.offsite_water.source")


class Facility(_Strict):
    pue: Annotated[float, Field(ge=1.0, le=5.0)] | None = None
    # Water (scheme 2026.3, docs/boundary.md): on-site WUE and the optional off-site intensity.
    wue: Wue | None = None
    offsite_water: OffsiteWater | None = None
    # ISO/IEC 30134-2 measurement category of the declared PUE (1-3), if known.
    pue_category: Literal[1, 2, 3] | None = None
    meter: SeriesSpec | None = None
    it_meter: SeriesSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Facility:
        if self.pue is None and self.meter is None:
            raise ValueError("facility needs either pue (declared) or meter + it_meter (measured)")
        if (self.meter is None) != (self.it_meter is None):
            raise ValueError(
                "facility.meter and facility.it_meter go together (measured PUE = facility / IT)"
            )
        return self


class Grid(_Strict):
    unit: str
    file: str | None = None
    annual: Annotated[float, Field(ge=0, le=5000)] | None = None
    source: str | None = None
    year: Annotated[int, Field(ge=1900, le=9000)] | None = None
    zone: str | None = None

    @field_validator("file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return None if v is None else _check_file_name(v)

    # Shown on the label and in the reports (sci.md is Markdown, where a tag would be live HTML).
    @field_validator("source", "zone")
    @classmethod
    def _labels(cls, v: str | None, info) -> str | None:
        return None if v is None else check_label(v, f"grid.{info.field_name}")

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        _check_unit(v, "[carbon] / [energy]", "a carbon intensity such as gCO2e/kWh")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Grid:
        if (self.file is None) == (self.annual is None):
            raise ValueError("grid needs exactly one of file (hourly intensity) or annual (one factor)")
        return self


class Attribution(_Strict):
    """This deployment's share of each power device's energy and the rule behind it
    (compute/attribution.py, docs/prometheus.md); the power samples themselves stay whole."""

    rule: str
    match: dict[str, str] = Field(default_factory=dict)
    shares: dict[str, Annotated[float, Field(ge=0, le=1)]]
    detail: dict[str, object] = Field(default_factory=dict)


class Manifest(_Strict):
    format: Literal["greencert-bundle/1"] = FORMAT
    scope: Scope
    period: Period
    power: SeriesSpec
    tokens: TokensSpec
    facility: Facility
    grid: Grid
    # Optional further meter layers; the certified figure always comes from ``power``.
    meters: list[MeterSpec] = Field(default_factory=list)
    # Free provenance (queries used, server version...), recorded but not interpreted.
    provenance: dict[str, object] = Field(default_factory=dict)
    # Market-based instruments, residual mix, hardware inventory, marginal series (docs/carbon.md).
    carbon: CarbonSpec | None = None
    # Running-requests gauge for the load-regime disclosure (docs/uncertainty.md).
    concurrency: ConcurrencySpec | None = None
    # Shared GPUs (MIG slices): the share of each device's energy that is this deployment's.
    attribution: Attribution | None = None
    # Completed-requests counter for the figures per 1,000 queries (scheme 2026.3).
    requests: RequestsSpec | None = None
    # Idle provisioned capacity (scheme 2026.3 full-stack boundary, docs/boundary.md).
    idle_capacity: IdleCapacitySpec | None = None
    # A change of engine version, model or GPUs inside the period: each segment is certified apart.
    segments: list[Segment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _segments_tile_period(self) -> Manifest:
        if not self.segments:
            return self
        if len(self.segments) < 2:
            raise ValueError("segments: declare at least two (one segment is just the period)")
        expected = self.period.start
        for n, seg in enumerate(self.segments):
            if seg.start != expected:
                raise ValueError(
                    f"segments[{n}].start {seg.start.isoformat()} should be {expected.isoformat()}: "
                    "segments must follow each other without gap or overlap, from period.start"
                )
            if seg.end <= seg.start:
                raise ValueError(f"segments[{n}].end is not after its start")
            expected = seg.end
        if expected != self.period.end:
            raise ValueError(
                f"the last segment ends {expected.isoformat()}, not at period.end {self.period.end.isoformat()}"
            )
        return self


def _check_unit(text: str, dimension: str, expected: str | None = None) -> None:
    from greencert.units import parse_unit  # pint loads only when a manifest is parsed

    try:
        parse_unit(text, dimension, "")
    except BundleError as exc:
        if expected is not None and "unknown unit" not in exc.problem:
            raise ValueError(f"{text!r} is not {expected}") from None
        raise ValueError(exc.problem) from None


def _check_quantity(text: str, dimension: str) -> str:
    from greencert.units import Q_, ureg

    try:
        quantity: pint.Quantity = Q_(text)
    except Exception as exc:  # pint raises many types on junk
        raise ValueError(f"{text!r} is not a quantity with a unit ({exc})") from None
    if quantity.dimensionality != ureg.get_dimensionality(dimension):
        raise ValueError(f"{text!r} has dimension {quantity.dimensionality}, expected {dimension}")
    if not quantity.magnitude > 0:
        raise ValueError(f"{text!r} must be positive")
    return text


def _check_file_name(name: str) -> str:
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 1:
        raise ValueError(f"file {name!r} must be a plain file name inside the bundle folder")
    return name


def _format_pydantic(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        parts.append(f"{loc}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_manifest(data: object, where: str) -> Manifest:
    """Turn loaded YAML into a Manifest, or raise a BundleError naming the key."""
    if not isinstance(data, dict):
        raise BundleError("manifest must be a YAML mapping of keys to values", where)
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise BundleError(_format_pydantic(exc), where) from None


def bundle_file(bundle_dir: Path | str, name: str, what: str) -> Path:
    """The path of bundle file ``name``, refused if following it could read outside the bundle.

    A symbolic link is refused even when it points inside the bundle: the bytes
    certified (and copied into the published evidence) must be the bundle's own,
    never another tenant's file reached through a link. Special files (FIFO,
    device) are refused before anything opens them (a FIFO would block).
    Messages name the path inside the bundle only, never what a link points to.
    """
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / name
    try:
        info = path.lstat()
    except FileNotFoundError:
        return path  # the caller says which file is missing
    except OSError as exc:
        raise BundleError(f"{what} file cannot be examined ({exc.strerror})", str(path)) from None
    if stat.S_ISLNK(info.st_mode):
        raise BundleError(
            f"{what} file is a symbolic link; links are not followed inside a bundle (copy the file in)",
            str(path),
        )
    if stat.S_ISDIR(info.st_mode):
        raise BundleError(f"{what} file is a directory, not a file", str(path))
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{what} file is not a regular file (a FIFO, socket or device?)", str(path))
    try:
        inside = path.resolve(strict=True).parent == bundle_dir.resolve(strict=True)
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise BundleError(f"{what} file resolves to a path outside the bundle folder", str(path))
    return path


def load_manifest(bundle_dir: Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_file(bundle_dir, MANIFEST_NAME, "manifest")
    if not path.exists():
        raise BundleError("manifest.yaml is missing", str(bundle_dir))
    try:
        # O_NOFOLLOW: a link swapped in after the check above is refused by the kernel too.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                raise BundleError("manifest is empty", str(path))
            if size > MAX_MANIFEST_BYTES:
                raise BundleError(
                    f"manifest is {size} bytes, over the {MAX_MANIFEST_BYTES} byte limit", str(path)
                )
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"manifest cannot be read ({exc.strerror})", str(path)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"manifest is not UTF-8 text ({exc.reason} at byte {exc.start})", str(path)
        ) from None
    # Strict: a duplicated key is an error naming both lines, never "the last one wins".
    data = parse_yaml(text, str(path), BundleError, "manifest")
    return parse_manifest(data, str(path))

"""The optional ``carbon:`` section of a bundle manifest (pydantic, unknown keys forbidden).

It holds what market-based and embodied accounting need besides the metered
series: contractual instruments (Guarantees of Origin, RECs, China GECs,
I-RECs, PPAs, supplier-specific rates) with their validity window and the
matching they allow, the residual-mix factor for unmatched consumption, the
hardware inventory for the SCI M term, and an optional marginal-emissions
series (kept apart from every average figure).

Kept free of other GreenCert imports so ``bundle.manifest`` can import it
without a cycle.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

InstrumentType = Literal["go", "rec", "gec", "i-rec", "ppa", "supplier"]
Matching = Literal["hourly", "monthly", "annual"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _plain_file(name: str) -> str:
    path = Path(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) != 1:
        raise ValueError(f"file {name!r} must be a plain file name inside the bundle folder")
    return name


def _label(value: str, what: str) -> str:
    for pos, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf") and char != "\t":
            raise ValueError(f"{what} contains control character U+{ord(char):04X} at position {pos}")
    if len(value) > 300:
        raise ValueError(f"{what} is longer than 300 characters")
    return value


def _utc(value: object, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    elif isinstance(value, str):
        try:
            stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what} {value!r} is not an RFC 3339 timestamp") from None
        if len(value) == 10:  # a bare date means midnight UTC
            stamp = stamp.replace(tzinfo=dt.UTC)
    else:
        raise ValueError(f"{what} {value!r} is not a timestamp")
    if stamp.tzinfo is None:
        raise ValueError(f"{what} {value!r} has no time zone offset (write Z or +00:00)")
    return stamp.astimezone(dt.UTC)


class Factor(_Strict):
    """A declared emission factor: value, unit and where it comes from."""

    value: Annotated[float, Field(ge=0, le=5000)]
    unit: str
    source: str
    year: int | None = None
    emission_factor_type: Literal["direct", "lifecycle"] | None = None

    @field_validator("source")
    @classmethod
    def _src(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("source must name where the factor comes from")
        return _label(v, "source")


class Instrument(_Strict):
    """One contractual instrument allocated to this site.

    ``matching`` says how the instrument may be matched to consumption:
    ``hourly`` needs ``profile_file`` (energy delivered per UTC hour, in
    ``profile_unit``); ``monthly`` and ``annual`` need ``volume`` (energy over
    the whole validity window, credited to a period in proportion to the time
    the period covers of the window).
    """

    id: str
    type: InstrumentType
    matching: Matching
    valid_from: dt.datetime
    valid_to: dt.datetime
    volume: str | None = None
    profile_file: str | None = None
    profile_unit: str = "MWh"
    # Carbon-free supply (renewable/nuclear attribute) counts toward the CFE
    # score and annual-match share; a supplier-specific rate usually does not.
    carbon_free: bool | None = None
    emission_factor: Factor | None = None
    registry_ref: str | None = None
    source: str

    @field_validator("valid_from", "valid_to", mode="before")
    @classmethod
    def _times(cls, v: object, info) -> dt.datetime:
        return _utc(v, f"carbon.instruments[].{info.field_name}")

    @field_validator("profile_file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        return None if v is None else _plain_file(v)

    @field_validator("id", "source", "registry_ref")
    @classmethod
    def _labels(cls, v: str | None, info) -> str | None:
        return None if v is None else _label(v, f"carbon.instruments[].{info.field_name}")

    @model_validator(mode="after")
    def _consistent(self) -> Instrument:
        if self.valid_to <= self.valid_from:
            raise ValueError(f"instrument {self.id}: valid_to is not after valid_from")
        if self.matching == "hourly" and self.profile_file is None:
            raise ValueError(
                f"instrument {self.id}: hourly matching needs profile_file (energy delivered per hour)"
            )
        if self.matching != "hourly" and self.volume is None:
            raise ValueError(f"instrument {self.id}: {self.matching} matching needs volume (e.g. '120 MWh')")
        if self.matching != "hourly" and self.profile_file is not None:
            raise ValueError(f"instrument {self.id}: profile_file is only used with hourly matching")
        if self.type == "supplier" and self.emission_factor is None:
            raise ValueError(f"instrument {self.id}: a supplier-specific instrument needs emission_factor")
        return self

    @property
    def is_carbon_free(self) -> bool:
        if self.carbon_free is not None:
            return self.carbon_free
        return self.type != "supplier"


class HardwareItem(_Strict):
    """Hardware whose embodied emissions the deployment uses (SCI M = TE x TS x RS)."""

    item: str
    count: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    embodied: str  # a pint carbon quantity per unit, e.g. "164 kgCO2e"
    lifetime: str  # a pint time quantity, e.g. "3 year"
    # Share of the item reserved for this deployment (1.0 = dedicated).
    resource_share: Annotated[float, Field(gt=0, le=1)] = 1.0
    source: str

    @field_validator("item", "source")
    @classmethod
    def _labels(cls, v: str, info) -> str:
        return _label(v, f"carbon.embodied.hardware[].{info.field_name}")


class Embodied(_Strict):
    hardware: list[HardwareItem] = Field(default_factory=list)
    # Without an inventory, defaults come from this profile of the packaged factors.
    profile: Literal["ecologits", "ccf"] | None = None


class Marginal(_Strict):
    """Marginal operating emission rates (e.g. WattTime co2_moer), reported apart from averages."""

    file: str
    unit: str = "lbCO2e/MWh"
    signal: str = "co2_moer"
    source: str

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return _plain_file(v)


class CarbonSpec(_Strict):
    instruments: list[Instrument] = Field(default_factory=list)
    residual_mix: Factor | None = None
    embodied: Embodied | None = None
    marginal: Marginal | None = None

    @model_validator(mode="after")
    def _unique(self) -> CarbonSpec:
        ids = [i.id for i in self.instruments]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"carbon.instruments: duplicated id(s) {', '.join(dupes)}")
        files = [i.profile_file for i in self.instruments if i.profile_file]
        if self.marginal is not None:
            files.append(self.marginal.file)
        shared = sorted({f for f in files if files.count(f) > 1})
        if shared:
            raise ValueError(f"carbon: file(s) {', '.join(shared)} used twice")
        return self

"""Prometheus source profiles: which PromQL selectors fill which series of an evidence bundle.

Built-in profiles live in ``data/source_profiles.yaml`` (DCGM, Kepler 0.11, redfish_exporter, vLLM,
SGLang, TGI; the engines' completed-requests counters too);
a fleet config adds or overrides profiles under ``source_profiles:`` with the same schema, so a new
exporter needs no code change. A deployment combines profiles (``profile: [dcgm, vllm]``); each role
(power, tokens, facility meters, a named meter) may come from one profile only.

Queries are plain selectors, a metric name plus label matchers, never functions: the bundle must hold
the raw samples so that validation and gap accounting see what the exporter really reported.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greencert.bundle.manifest import check_identifier
from greencert.errors import ConfigError, SourceError
from greencert.yamlio import load_yaml_file

PROFILES_FILE = Path(__file__).resolve().parents[1] / "data" / "source_profiles.yaml"

METRIC_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# One PromQL label matcher with a double-quoted value (escapes allowed), e.g. zone="package", gpu=~"0|1".
_MATCHER = r'\s*[A-Za-z_][A-Za-z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\\n]|\\.)*"\s*'
MATCHERS_RE = re.compile(rf"^{_MATCHER}(?:,{_MATCHER})*,?\s*$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")

ROLE_POWER = "power"
ROLE_TOKENS = "tokens"
ROLE_FACILITY = "facility_meter"
ROLE_IT = "it_meter"
ROLE_REQUESTS = "requests"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_template(value: str | None) -> str | None:
    if value is None:
        return None
    names = _PLACEHOLDER_RE.findall(value)
    if not names:
        raise ValueError(f"name template {value!r} uses no label (write e.g. '{{instance}}')")
    for group in names:
        alternatives = group.split("|")
        for alt in alternatives[:-1] if alternatives[-1] == "" else alternatives:
            if not LABEL_RE.fullmatch(alt):
                raise ValueError(f"name template {value!r}: {alt!r} is not a label name")
    return value


class Selector(_Strict):
    """A metric name and optional extra PromQL label matchers (``zone="package"``)."""

    metric: str
    matchers: str | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if not METRIC_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a Prometheus metric name (a plain selector is required)")
        return v

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, v: str | None) -> str | None:
        if v is not None and not MATCHERS_RE.fullmatch(v):
            raise ValueError(
                f'{v!r} is not a list of PromQL label matchers such as zone="package", gpu=~"0|1"'
            )
        return v


class MeteredSelector(Selector):
    """A power gauge or energy counter; fields after ``device`` go into the manifest as they are."""

    kind: Literal["gauge", "counter"]
    unit: str
    device: str | None = None
    meter_class: Literal["gpu_sensor", "node_meter", "pdu", "revenue_meter"] | None = None
    accuracy: Annotated[float, Field(gt=0, lt=1)] | None = None
    max_gap: str | None = None
    max_device_power: str | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return _check_template(v)

    def spec(self, file: str) -> dict[str, Any]:
        """The manifest series spec this selector fills."""
        keys = ("kind", "unit", "meter_class", "accuracy", "max_gap", "max_device_power")
        out: dict[str, Any] = {"file": file}
        out.update({k: getattr(self, k) for k in keys if getattr(self, k) is not None})
        return out


class ProfileMeter(MeteredSelector):
    name: str
    layer: Literal["gpu", "node", "pdu", "facility"]
    crosscheck: bool = False
    crosscheck_tolerance: Annotated[float, Field(gt=0, lt=1)] | None = None
    # A meter is an extra layer: by default a meter with no series is left out of the bundle (and
    # recorded as absent); ``required: true`` makes its absence an error like power's.
    required: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_identifier(v, "meters[].name")

    def spec(self, file: str) -> dict[str, Any]:
        out = {"name": self.name, "layer": self.layer, **super().spec(file)}
        if self.crosscheck:
            out["crosscheck"] = True
            if self.crosscheck_tolerance is not None:
                out["crosscheck_tolerance"] = self.crosscheck_tolerance
        return out


class TokenSelectors(_Strict):
    output: Selector
    input: Selector
    instance: str | None = None

    @field_validator("instance")
    @classmethod
    def _instance(cls, v: str | None) -> str | None:
        return _check_template(v)


class FacilitySelectors(_Strict):
    meter: MeteredSelector
    it_meter: MeteredSelector


class SourceProfile(_Strict):
    description: str = ""
    power: MeteredSelector | None = None
    tokens: TokenSelectors | None = None
    meters: list[ProfileMeter] = Field(default_factory=list)
    facility: FacilitySelectors | None = None
    # Completed-requests counter (figures per 1,000 queries); optional: a deployment without it
    # simply has no per-query figures.
    requests: Selector | None = None
    # Metric names older releases of the exporter used (name -> why and what to do): when a query of
    # this profile finds nothing, the pull looks for these and says so instead of "no samples".
    retired_metrics: dict[str, str] = Field(default_factory=dict)

    @field_validator("retired_metrics")
    @classmethod
    def _retired(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not METRIC_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a Prometheus metric name")
        return v


@dataclass
class Plan:
    """The merged profiles of one deployment: every series to pull, by role."""

    profiles: list[str]
    power: MeteredSelector
    tokens: TokenSelectors
    meters: list[ProfileMeter] = field(default_factory=list)
    facility: FacilitySelectors | None = None
    retired_metrics: dict[str, str] = field(default_factory=dict)
    requests: Selector | None = None

    def roles(self) -> list[str]:
        names = [ROLE_POWER, ROLE_TOKENS, *(m.name for m in self.meters)]
        if self.facility is not None:
            names += [ROLE_FACILITY, ROLE_IT]
        return names

    def optional_roles(self) -> list[str]:
        """Roles pulled when the server has them (the request counter), also open to series_labels."""
        return [ROLE_REQUESTS] if self.requests is not None else []


def _pydantic_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
    )


def parse_profile(name: str, data: object, where: str) -> SourceProfile:
    try:
        return SourceProfile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"source profile {name!r}: {_pydantic_message(exc)}", where) from None


@functools.cache
def builtin_profiles() -> dict[str, SourceProfile]:
    raw = load_yaml_file(PROFILES_FILE, ConfigError, "source profiles")  # strict: duplicate keys are errors
    return {name: parse_profile(name, data, str(PROFILES_FILE)) for name, data in raw.items()}


def resolve_plan(names: list[str], user_profiles: Mapping[str, Any], where: str) -> Plan:
    """Merge the named profiles (user profiles override built-ins of the same name) into one plan."""
    known = dict(builtin_profiles())
    for name, data in user_profiles.items():
        known[name] = parse_profile(name, data, f"{where}: source_profiles.{name}")
    power = tokens = facility = requests = None
    owner: dict[str, str] = {}
    meters: list[ProfileMeter] = []
    retired: dict[str, str] = {}

    def claim(role: str, profile: str) -> None:
        if role in owner:
            raise ConfigError(
                f"profiles {owner[role]!r} and {profile!r} both define {role}; combine profiles "
                "that cover different series",
                where,
            )
        owner[role] = profile

    for name in names:
        if name not in known:
            raise ConfigError(f"unknown source profile {name!r}; known: {', '.join(sorted(known))}", where)
        prof = known[name]
        retired.update(prof.retired_metrics)
        if prof.power is not None:
            claim(ROLE_POWER, name)
            power = prof.power
        if prof.tokens is not None:
            claim(ROLE_TOKENS, name)
            tokens = prof.tokens
        if prof.facility is not None:
            claim("facility", name)
            facility = prof.facility
        if prof.requests is not None:
            claim(ROLE_REQUESTS, name)
            requests = prof.requests
        for meter in prof.meters:
            if meter.name in (ROLE_POWER, ROLE_TOKENS, ROLE_FACILITY, ROLE_IT, ROLE_REQUESTS):
                raise ConfigError(f"profile {name!r}: meter name {meter.name!r} is reserved", where)
            claim(f"meter {meter.name}", name)
            meters.append(meter)
    if power is None or tokens is None:
        missing = " and ".join(r for r, v in ((ROLE_POWER, power), (ROLE_TOKENS, tokens)) if v is None)
        raise ConfigError(
            f"profiles {', '.join(names)} define no {missing}; combine a power profile (e.g. dcgm) "
            "with a token profile (e.g. vllm)",
            where,
        )
    return Plan(list(names), power, tokens, meters, facility, retired, requests)


def promql_string(value: str) -> str:
    """A PromQL double-quoted string: JSON escaping is a subset PromQL (Go syntax) reads back."""
    return json.dumps(value, ensure_ascii=False)


def build_selector(sel: Selector, labels: Mapping[str, str]) -> str:
    """``metric{profile matchers, deployment labels}`` with exact-match deployment labels."""
    parts = [sel.matchers.strip().rstrip(",").strip()] if sel.matchers else []
    for name, value in labels.items():
        if not LABEL_RE.fullmatch(name):
            raise ConfigError(f"{name!r} is not a Prometheus label name", "source labels")
        parts.append(f"{name}={promql_string(str(value))}")
    return f"{sel.metric}{{{', '.join(parts)}}}" if parts else sel.metric


def canonical_labels(labels: Mapping[str, str]) -> str:
    """A series' label set minus its name, as ``a=x,b=y`` (sorted): unique per metric."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__")


def series_name(template: str | None, labels: Mapping[str, str], query: str) -> str:
    """Name a series (device or instance) from its labels with ``template``; see the module doc."""
    if template is None:
        return canonical_labels(labels) or "all"

    def fill(match: re.Match[str]) -> str:
        alternatives = match.group(1).split("|")
        for alt in alternatives:
            if alt == "":
                return ""
            if labels.get(alt):
                return labels[alt]
        raise SourceError(
            f"series {{{canonical_labels(labels)}}} has none of the labels {', '.join(alternatives)} "
            f"that the name template {template!r} needs",
            f"query {query}",
        )

    return _PLACEHOLDER_RE.sub(fill, template)

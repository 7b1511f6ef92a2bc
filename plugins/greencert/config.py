"""Fleet configuration: which deployments to certify, where their data comes from, where to publish."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from greencert.bundle.manifest import check_identifier
from greencert.carbon.attach import SiteCarbonConfig
from greencert.errors import ConfigError
from greencert.yamlio import load_yaml_file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedSource(_Strict):
    kind: Literal["simulated"]
    profile: str | None = None  # defaults to the deployment name
    step_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0
    file_format: Literal["csv", "parquet"] = "csv"
    seed: int = 0


class BundleSource(_Strict):
    """Bundles produced elsewhere; ``path`` may use {deployment}, {start} and {end} (YYYYmmddTHHMMZ)."""

    kind: Literal["bundle"]
    path: str


class PrometheusSource(_Strict):
    """Pull from Prometheus; see docs/prometheus.md."""

    kind: Literal["prometheus"]
    conn_id: str = "greencert_prometheus"
    # One source profile or several combined, e.g. [dcgm, vllm] (built-in or under source_profiles).
    profile: str | list[str]
    # Exact-match label matchers added to every query, and per role (power, tokens, a meter name,
    # facility_meter, it_meter) where exporters label their series differently.
    labels: dict[str, str] = Field(default_factory=dict)
    series_labels: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Static manifest parts: scope, facility, grid, and power overrides (devices, max_device_power...).
    manifest: dict[str, Any] = Field(default_factory=dict)
    # Query step; no longer than the scrape interval, else samples between steps are never seen.
    step_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0


Source = Annotated[SimulatedSource | BundleSource | PrometheusSource, Field(discriminator="kind")]


class DeploymentConfig(_Strict):
    deployment: str
    source: Source

    @field_validator("deployment")
    @classmethod
    def _id(cls, v: str) -> str:
        return check_identifier(v, "deployment")


class FleetConfig(_Strict):
    registry: str
    work_dir: str
    scheme: str | None = None
    deployments: list[DeploymentConfig]
    # Extra Prometheus source profiles (name -> profile); merged over the built-in ones.
    source_profiles: dict[str, Any] = Field(default_factory=dict)
    # Per site: grid intensity source, marginal source, carbon declarations (docs/carbon.md).
    carbon: dict[str, SiteCarbonConfig] = Field(default_factory=dict)
    base_dir: str = "."

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (Path(self.base_dir) / path).resolve()

    @property
    def registry_path(self) -> Path:
        # A URL (s3://, gs://, file://...) names an fsspec registry (docs/trust.md): kept as a
        # UPath, whose str() is the URL again, instead of being resolved as a local folder.
        if "://" in self.registry:
            from greencert.files import registry_root

            return registry_root(self.registry)
        return self.resolve(self.registry)

    @property
    def work_path(self) -> Path:
        return self.resolve(self.work_dir)

    @property
    def scheme_path(self) -> Path | None:
        return self.resolve(self.scheme) if self.scheme else None

    def deployment(self, name: str) -> DeploymentConfig:
        for d in self.deployments:
            if d.deployment == name:
                return d
        raise ConfigError(f"deployment {name!r} is not in the fleet config")


@functools.cache
def _load(path: str, mtime: float) -> FleetConfig:
    p = Path(path)
    # Strict: a duplicated key (two `registry:` lines) is an error naming both lines.
    data = load_yaml_file(p, ConfigError, "fleet config")
    if not isinstance(data, dict):
        raise ConfigError("fleet config must be a YAML mapping", path)
    data.setdefault("base_dir", str(p.parent.resolve()))
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(msg, path) from None


def load_config(path: str | Path) -> FleetConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("fleet config file does not exist", str(p))
    return _load(str(p.resolve()), p.stat().st_mtime)

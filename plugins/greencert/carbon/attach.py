"""Attach a site's grid data and carbon declarations to an evidence bundle.

The fleet config says, per site, where the grid intensity comes from
(``electricitymaps``: hourly from the API; ``default``: the packaged annual
factor for a country/region; ``bundle``: keep what the bundle has), whether
a marginal series is fetched (``watttime``), and which carbon declarations
(instruments, residual mix, hardware inventory) go into the manifest's
``carbon:`` section. The result is written as a new, self-contained bundle
(temporary folder + rename, so it appears whole or not at all): the
certificate is recomputed from it alone.

Example (fleet config)::

    carbon:
      dc-east-1:
        grid: {kind: electricitymaps, zone: US-MIDA-PJM, conn_id: greencert_electricitymaps}
        marginal: {kind: watttime, region: PJM_DC, conn_id: greencert_watttime}
        files: {ppa_solar.csv: contracts/ppa_solar_2026.csv}
        manifest:
          instruments:
            - {id: ppa-1, type: ppa, matching: hourly, profile_file: ppa_solar.csv,
               valid_from: 2026-01-01, valid_to: 2027-01-01, source: "PPA #1 meter data"}
      dc-cn-1:
        grid: {kind: default, factor: CN-East}
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from greencert.atomic import build_directory_atomically
from greencert.errors import ConfigError

GRID_FILE = "grid.csv"
MARGINAL_FILE = "marginal.csv"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GridSourceConfig(_Strict):
    kind: Literal["electricitymaps", "default", "bundle"]
    zone: str | None = None  # Electricity Maps zone key, e.g. DE, US-MIDA-PJM
    factor: str | None = None  # key of data/carbon_factors.yaml grid table, e.g. CN-East
    conn_id: str = "greencert_electricitymaps"
    emission_factor_type: Literal["lifecycle", "direct"] = "lifecycle"
    max_fill_hours: Annotated[int, Field(ge=0, le=24)] = 3


class MarginalSourceConfig(_Strict):
    kind: Literal["watttime"]
    region: str
    conn_id: str = "greencert_watttime"
    signal_type: str = "co2_moer"
    max_fill_hours: Annotated[int, Field(ge=0, le=24)] = 3


class SiteCarbonConfig(_Strict):
    grid: GridSourceConfig | None = None
    marginal: MarginalSourceConfig | None = None
    # Bundle file name -> path (relative to the fleet config) copied into the bundle.
    files: dict[str, str] = Field(default_factory=dict)
    # Becomes the manifest's carbon: section (validated by greencert.carbon.models.CarbonSpec).
    manifest: dict[str, Any] = Field(default_factory=dict)


def _copy_tree_atomic(target: Path, build) -> Path:
    """Build the new bundle in a sibling temporary folder, then swap it into place."""
    return build_directory_atomically(target, build)


def attach_carbon(
    bundle_dir: Path,
    target: Path,
    site: SiteCarbonConfig,
    start: dt.datetime,
    end: dt.datetime,
    base_dir: Path,
    http: dict[str, Any] | None = None,
) -> Path:
    """Write ``bundle_dir`` plus the site's grid/marginal data and carbon section to ``target``."""
    from greencert.bundle.manifest import MANIFEST_NAME, load_manifest, parse_manifest
    from greencert.carbon import grid_sources as gs
    from greencert.carbon.factors import grid_factor

    http = http or {}
    manifest = load_manifest(bundle_dir)
    data = manifest.model_dump(mode="json", exclude_none=True)
    provenance = dict(data.get("provenance") or {})
    new_files: dict[str, Any] = {}
    drop: set[str] = set()
    grid_cfg = site.grid
    if grid_cfg is not None and grid_cfg.kind == "electricitymaps":
        if not grid_cfg.zone:
            raise ConfigError("grid kind electricitymaps needs zone", "fleet config carbon.grid")
        creds = gs.connection_credentials(grid_cfg.conn_id, gs.ELECTRICITY_MAPS_URL)
        hourly = gs.ElectricityMaps(creds, **http).past_range(
            grid_cfg.zone, start, end, grid_cfg.emission_factor_type, grid_cfg.max_fill_hours
        )
        if manifest.grid.file:
            drop.add(manifest.grid.file)
        new_files[GRID_FILE] = ("intensity", hourly, grid_cfg.emission_factor_type)
        data["grid"] = {
            "file": GRID_FILE,
            "unit": "gCO2e/kWh",
            "source": f"Electricity Maps API v3 past-range, zone {grid_cfg.zone}, "
            f"{grid_cfg.emission_factor_type}, hourly",
            "zone": grid_cfg.zone,
        }
        provenance["grid"] = hourly.provenance
    elif grid_cfg is not None and grid_cfg.kind == "default":
        if not grid_cfg.factor:
            raise ConfigError(
                "grid kind default needs factor (e.g. CN, CN-East, DE)", "fleet config carbon.grid"
            )
        if manifest.grid.file:
            drop.add(manifest.grid.file)
        data["grid"] = grid_factor(grid_cfg.factor).as_manifest_grid()
        provenance["grid"] = {"source": "GreenCert offline factors", "factor": grid_cfg.factor}
    if site.marginal is not None:
        creds = gs.connection_credentials(site.marginal.conn_id, gs.WATTTIME_URL)
        marginal = gs.WattTime(creds, **http).historical(
            site.marginal.region, start, end, site.marginal.signal_type, site.marginal.max_fill_hours
        )
        new_files[MARGINAL_FILE] = ("rate", marginal, None)
        provenance["marginal"] = marginal.provenance
    carbon = dict(site.manifest)
    if site.marginal is not None:
        carbon["marginal"] = {
            "file": MARGINAL_FILE,
            "unit": new_files[MARGINAL_FILE][1].unit,
            "signal": site.marginal.signal_type,
            "source": f"WattTime API v3 historical, region {site.marginal.region}, {site.marginal.signal_type}",
        }
    if carbon:
        data["carbon"] = carbon
    data["provenance"] = provenance
    where = f"{target}/{MANIFEST_NAME}"
    parse_manifest(data, where)  # never write a bundle we would reject
    copies = {}
    for name, rel in site.files.items():
        src = (base_dir / rel).resolve()
        if not src.is_file():
            raise ConfigError(f"file {rel} for {name} does not exist", str(src))
        copies[name] = src

    def build(staging: Path) -> None:
        for item in sorted(bundle_dir.iterdir()):
            if item.is_file() and item.name not in drop and item.name != MANIFEST_NAME:
                shutil.copy2(item, staging / item.name)
        for name, src in copies.items():
            shutil.copy2(src, staging / name)
        for name, (column, hourly, kind) in new_files.items():
            gs.write_hourly_csv(staging / name, hourly, column, kind)
        (staging / MANIFEST_NAME).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    # Works in place too (bundle_dir == target): the old folder is read before the swap.
    return _copy_tree_atomic(target, build)


def attach_site_carbon(
    cfg: Any, bundle_dir: Path, target: Path, start: dt.datetime, end: dt.datetime
) -> Path:
    """Apply the fleet config's carbon settings for the bundle's site, if it has any."""
    from greencert.bundle.manifest import load_manifest

    sites: dict[str, SiteCarbonConfig] = getattr(cfg, "carbon", None) or {}
    site = load_manifest(bundle_dir).scope.site
    if site not in sites:
        return bundle_dir
    return attach_carbon(bundle_dir, target, sites[site], start, end, Path(cfg.base_dir))

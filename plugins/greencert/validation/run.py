"""Run the Great Expectations suites of ``expectations/`` over an evidence bundle.

GX Core is used directly from task code with an ephemeral context (no project
folder, no parse-time work), as the GX docs recommend for pipelines that bring
their own data. ``great_expectations`` takes seconds to import, so it is only
imported inside :func:`_gx`, never at module or DAG-file level.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greencert.bundle.reader import Bundle, DeviceShards, Series
from greencert.compute.fold import meter_fold, power_fold
from greencert.errors import ValidationFailed
from greencert.grading import (
    Scheme,
    check_manifest_tolerances,
    effective_max_device_power,
    effective_max_gap,
    gpu_count,
)
from greencert.units import ENERGY, POWER, Q_, parse_unit
from greencert.validation.gx import SuiteResult, _clean_gx_result, _gx, expectations_dir, import_gx_quietly
from greencert.validation.profile import (
    Profile,
    grid_profile,
    implausible_token_rate,
    locate,
    request_profile,
    token_profile,
)

log = logging.getLogger(__name__)


def load_suite(name: str) -> Any:
    gx, _ = _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite

    path = expectations_dir() / f"{name}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    return ExpectationSuite(**data)


@dataclass
class ValidationReport:
    success: bool
    suites: list[SuiteResult] = field(default_factory=list)
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)
    coverage: float | None = None

    def failure_messages(self) -> list[str]:
        return [f["message"] for s in self.suites for f in s.failures if f["severity"] == "critical"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "validator": "great_expectations",
            "rows": self.rows,
            "coverage": self.coverage,
            "suites": [
                {
                    "suite": s.suite,
                    "file": s.file,
                    "success": s.success,
                    "evaluated_expectations": s.evaluated,
                    "failures": s.failures,
                    "great_expectations_result": s.gx_result,
                }
                for s in self.suites
            ],
        }


def run_suite(
    suite_name: str,
    profile: Profile,
    series: Series | DeviceShards,
    label: str,
    params: dict[str, Any],
    kind: str = "gauge",
) -> SuiteResult:
    gx, batch_definition = _gx()
    suite = load_suite(suite_name)
    frame = profile.frame
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    # The label column is named in the result, so GX's Data Docs show which device (or instance,
    # or series) each unexpected row is, not only its position in the statistics frame.
    result = batch.validate(
        suite,
        expectation_parameters=params,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [label]},
    )
    failures = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        base = (cfg.meta or {}).get("message", cfg.type)
        severity = str(getattr(cfg.severity, "value", cfg.severity) or "critical").lower()
        rows = [_row_position(frame, label, entry) for entry in r.result.get("unexpected_index_list") or []]
        details = []
        for idx in rows[:3]:
            name = str(frame.iloc[idx][label])
            value = frame.iloc[idx][column] if column in frame.columns else None
            where = locate(series, column, int(idx), params, kind) if column else None
            detail = f"{label} {name!r}"
            if value is not None and column not in ("device", "instance"):
                shown = value if not isinstance(value, float) else float(f"{value:.6g}")
                detail += f" ({column}={shown})"
            if where:
                detail += f", first at {where}"
            details.append(detail)
        if not rows and column == "device":
            missing = sorted(set(params.get("declared_devices", [])) - set(frame[label].astype(str)))
            details.append("missing: " + ", ".join(missing))
        elif not rows and cfg.type.startswith("expect_table_row_count"):
            details.append(f"found {len(frame)}, expected at least {params.get('expected_devices')}")
        elif not rows and column:
            details.append(f"observed {r.result.get('observed_value')}")
        if column == "coverage" and (frame["coverage"] < 0).any():
            details.append("coverage not computable until the timestamp problems are fixed")
        message = f"{series.file}: {base} [{cfg.type}({column or ''})]: " + "; ".join(details)
        failures.append({"expectation": cfg.type, "column": column, "severity": severity, "message": message})
    return SuiteResult(
        suite_name,
        series.file,
        bool(result.success),
        failures,
        len(result.results),
        _clean_gx_result(result.to_json_dict()),
    )


def _row_position(frame: pd.DataFrame, label: str, entry: Any) -> int:
    """Position in ``frame`` of one unexpected row as GX reports it (``{label: name, ...}`` or an index)."""
    if isinstance(entry, dict) and label in entry:
        hits = np.flatnonzero(frame[label].astype(str).to_numpy() == str(entry[label]))
        if len(hits):
            return int(hits[0])
    return int(entry) if not isinstance(entry, dict) else 0


def _meter_params(
    spec, scheme: Scheme, start: float, end: float, where: str
) -> tuple[dict[str, Any], float, float]:
    if spec.kind == "gauge":
        unit = parse_unit(spec.unit, POWER, f"{where}.unit")
        to_base = Q_(1.0, unit).to("W").magnitude
    else:
        unit = parse_unit(spec.unit, ENERGY, f"{where}.unit")
        to_base = Q_(1.0, unit).to("J").magnitude
    max_gap = effective_max_gap(spec, scheme)
    limit = effective_max_device_power(spec, scheme, graded_series=where == "power")
    declared = list(spec.devices or [])
    params = {
        "earliest_allowed": start - max_gap,
        "latest_allowed": end + max_gap,
        "max_device_power_w": limit,
        "max_counter_reset_share": scheme.max_counter_reset_share,
        "min_coverage": scheme.min_coverage,
        "expected_devices": max(1, len(declared)),
        "declared_devices": declared,
        "to_watts": to_base,
        # Not used by the suites: they let a failure message name the first uncovered time.
        "max_gap_seconds": max_gap,
        "period_start": start,
        "period_end": end,
    }
    return params, to_base, max_gap


@dataclass
class SuiteInput:
    """One suite to run: the statistics frame of one series file and the suite's parameters."""

    suite: str
    profile: Profile
    series: Series | DeviceShards
    label: str
    params: dict[str, Any]
    kind: str = "gauge"


def profile_bundle(bundle: Bundle, scheme: Scheme) -> tuple[list[SuiteInput], float | None]:
    """Per-device statistics of every input of ``bundle`` (one pass over the rows), in suite order.

    Returns the suites to run and the power coverage. Integrals computed here
    stay on the series (``Series.cache``), so computing figures afterwards in
    the same process does not integrate again.
    """
    m = bundle.manifest
    # The scheme owns the tolerances: a manifest that loosens one is refused before any statistic.
    check_manifest_tolerances(m, scheme, str(Path(bundle.path) / "manifest.yaml"))
    check_token_rate(bundle, scheme)
    start, end = m.period.start.timestamp(), m.period.end.timestamp()
    items: list[SuiteInput] = []

    params, _, _ = _meter_params(m.power, scheme, start, end, "power")
    # The power series in one pass, shard by shard: the same statistics as a file read whole.
    # Great Expectations is imported while pool workers fold the shards (it is needed next).
    power_profile = power_fold(
        bundle, scheme, meanwhile=lambda: import_gx_quietly(hide_sqlalchemy=True)
    ).profile
    items.append(SuiteInput("power_profile", power_profile, bundle.power, "device", params, m.power.kind))
    coverage = power_profile.integrated.coverage() if power_profile.integrated is not None else None

    tok_params = {
        "earliest_allowed": start - scheme.max_gap_seconds,
        "latest_allowed": end + scheme.max_gap_seconds,
        "max_counter_reset_share": scheme.max_counter_reset_share,
        "min_coverage": scheme.min_coverage,
        "max_gap_seconds": scheme.max_gap_seconds,
        "period_start": start,
        "period_end": end,
    }
    items.append(
        SuiteInput(
            "tokens_profile", token_profile(bundle.tokens, start, end), bundle.tokens, "instance", tok_params
        )
    )

    if bundle.requests is not None:
        items.append(
            SuiteInput(
                "requests_profile",
                request_profile(bundle.requests, start, end),
                bundle.requests,
                "instance",
                dict(tok_params),
            )
        )

    if bundle.grid is not None:
        grid_params = {
            "earliest_allowed": float(np.floor(start / 3600.0) * 3600.0),
            "latest_allowed": float(np.ceil(end / 3600.0) * 3600.0 - 3600.0),
            "max_grid_intensity": Q_(scheme.max_grid_intensity, "gCO2e/kWh").to(m.grid.unit).magnitude,
        }
        items.append(
            SuiteInput(
                "grid_profile", grid_profile(bundle.grid, start, end), bundle.grid, "series", grid_params
            )
        )

    extra_meters = [(bundle.meters.get(spec.name), spec, f"meters.{spec.name}") for spec in m.meters]
    for series, spec, name in (
        (bundle.facility_meter, m.facility.meter, "facility.meter"),
        (bundle.it_meter, m.facility.it_meter, "facility.it_meter"),
        *extra_meters,
    ):
        if series is None or spec is None:
            continue
        p, _, gap = _meter_params(spec, scheme, start, end, name)
        # Folded shard by shard like the power series; computation reuses the same fold.
        prof = meter_fold(series, spec, start, end, gap, name).profile
        items.append(SuiteInput("power_profile", prof, series, "device", p, spec.kind))
    return items, coverage


def check_token_rate(bundle: Bundle, scheme: Scheme) -> None:
    """Refuse an output-token counter step no GPU could produce (scheme ceiling per GPU x GPUs).

    One absurd sample would otherwise be integrated as tokens and improve the grade.
    """
    import datetime as dt

    n_gpus = gpu_count(bundle.manifest, len(bundle.power.devices))
    per_gpu = scheme.max_output_tokens_per_second_per_gpu
    ceiling = per_gpu * n_gpus
    series = bundle.tokens
    values = series.values["output_tokens"]
    same = series.device_codes[1:] == series.device_codes[:-1]
    steps = int(same.sum())
    if steps and int((same & (values[1:] < values[:-1])).sum()) > scheme.max_counter_reset_share * steps:
        return  # not a cumulative counter at all: the suite's reset-share rule names that better
    hit = implausible_token_rate(series, "output_tokens", ceiling)
    if hit is None:
        return
    index, increase, step, rate = hit
    when = dt.datetime.fromtimestamp(float(series.t[index]), dt.UTC).isoformat()
    instance = series.devices[int(series.device_codes[index])]
    raise ValidationFailed(
        f"implausible output token counter jump: +{increase:.6g} tokens in {step:g} s at {when} "
        f"(instance {instance!r}) is {rate:.4g} tokens/s, above the scheme's plausible "
        f"{ceiling:g} tokens/s ({per_gpu:g} per GPU x {n_gpus} GPU(s); "
        f"{scheme.id} {scheme.version} max_output_tokens_per_second_per_gpu)",
        f"{Path(bundle.path) / series.where_row(index)} column output_tokens",
    )


def validate_bundle(bundle: Bundle, scheme: Scheme, report_path: Path | None = None) -> ValidationReport:
    """Validate every input of ``bundle``; raise ValidationFailed (after writing the report) on failure."""
    began = time.perf_counter()
    report = ValidationReport(success=True)
    items, report.coverage = profile_bundle(bundle, scheme)
    for item in items:
        report.suites.append(
            run_suite(item.suite, item.profile, item.series, item.label, item.params, item.kind)
        )
        report.rows[item.series.file] = item.series.n_rows

    report.seconds = time.perf_counter() - began
    report.success = not report.failure_messages()
    if report_path is not None:
        write_report(report, report_path)
    if not report.success:
        messages = report.failure_messages()
        failed = ValidationFailed(
            f"{len(messages)} critical expectation(s) failed: " + " | ".join(messages),
            str(bundle.path),
            str(report_path) if report_path else None,
        )
        # The suites' results travel with the failure, so the rejected bundle's Data Docs page can
        # show which expectation failed and on which row (pipeline.validate_stage).
        failed.report = report  # type: ignore[attr-defined]
        raise failed
    return report


def write_report(report: ValidationReport, path: Path) -> None:
    from greencert.atomic import atomic_write_bytes

    payload = json.dumps(
        report.to_dict(), sort_keys=True, separators=(",", ":"), default=_json_default
    ).encode()
    atomic_write_bytes(Path(path), payload)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer | np.floating):
        return obj.item()
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return str(obj)

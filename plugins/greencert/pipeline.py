"""The certification stages. The DAG and the CLI both call these: one way to certify.

Each stage reads files and writes one JSON file into a work folder, returning
its path, so Airflow passes paths (never DataFrames) through XCom and a stage
can be retried alone.

    validate_stage -> validation.json   (GX suites; raises on a critical failure)
    compute_stage  -> figures.json      (refuses bundles that changed since validation)
    grade_stage    -> graded.json
    publish_stage  -> <registry>/<site>/<deployment>/<certificate_id>.json
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from greencert.errors import GreenCertError, ValidationFailed

log = logging.getLogger("greencert")

VALIDATION_FILE = "validation.json"
FIGURES_FILE = "figures.json"
GRADED_FILE = "graded.json"


def _scheme(scheme_path: str | Path | None):
    from greencert.grading import DEFAULT_SCHEME, load_scheme

    return load_scheme(Path(scheme_path) if scheme_path else DEFAULT_SCHEME)


def _write_json(path: Path, data: Any, durable: bool = True) -> Path:
    from greencert.atomic import atomic_write_bytes

    # Compact: json's C encoder is only used without indent; indenting the 50 KB validation
    # reports in pure Python was a tenth of a fleet-day's CPU. `jq .` reads them nicely.
    atomic_write_bytes(path, json.dumps(data, sort_keys=True, separators=(",", ":")).encode(), durable)
    return path


def validate_stage(
    bundle_dir: str | Path, work_dir: str | Path, scheme_path: str | Path | None = None
) -> str:
    """Validate the bundle with the GX suites; write validation.json; raise if a critical expectation fails."""
    from greencert.bundle import open_bundle
    from greencert.validation import validate_bundle

    work = Path(work_dir)
    report_path = work / VALIDATION_FILE
    report_path.unlink(missing_ok=True)  # a stale success must never outlive a new failure
    scheme = _scheme(scheme_path)
    bundle = open_bundle(bundle_dir)
    failed: ValidationFailed | None = None
    try:
        report = validate_bundle(bundle, scheme)
    except ValidationFailed as exc:
        failed = exc
        report = None
    from greencert.validation.run import ValidationReport

    payload: dict[str, Any]
    failed_report = getattr(failed, "report", None)
    if report is None and isinstance(failed_report, ValidationReport):
        payload = {**failed_report.to_dict(), "error": str(failed)}
    elif report is None:
        payload = {"success": False, "error": str(failed)}
    else:
        payload = report.to_dict()
        assert isinstance(report, ValidationReport)
    payload["inputs"] = bundle.inputs
    payload["scheme"] = {"id": scheme.id, "version": scheme.version}
    _data_docs(payload, work, bundle)
    if failed is not None:
        _write_json(work / "validation.failed.json", payload)
        raise failed
    _write_json(report_path, payload)
    rows = ", ".join(f"{k}: {v:,} rows" for k, v in payload["rows"].items())
    log.info(
        "validated %s/%s: %s; %d expectations passed; power coverage %.4f",
        bundle.manifest.scope.site,
        bundle.manifest.scope.deployment,
        rows,
        sum(s["evaluated_expectations"] for s in payload["suites"]),
        payload.get("coverage") or 0.0,
    )
    return str(report_path)


def _data_docs(payload: dict[str, Any], work: Path, bundle: Any) -> None:
    """GX Data Docs of this validation run in ``<work>/datadocs/`` (published beside the certificate).

    Best effort: a page that cannot be rendered is logged, never a reason to reject or publish.
    """
    from greencert.validation.gx import DATA_DOCS_DIR, build_data_docs

    if not payload.get("suites"):
        import shutil

        shutil.rmtree(work / DATA_DOCS_DIR, ignore_errors=True)  # never a stale run's pages
        return
    scope = bundle.manifest.scope
    period_end = bundle.manifest.period.end.strftime("%Y%m%dT%H%M%SZ")
    try:
        build_data_docs(payload, work / DATA_DOCS_DIR, f"{scope.site}.{scope.deployment}", period_end)
    except Exception:  # noqa: BLE001 - the report itself is the record; the page is a view of it
        log.exception("could not build the Data Docs of %s/%s", scope.site, scope.deployment)


def compute_stage(
    bundle_dir: str | Path,
    validation_path: str | Path,
    work_dir: str | Path,
    scheme_path: str | Path | None = None,
) -> str:
    """Compute the figures of a bundle that passed validation and has not changed since."""
    from greencert.bundle import open_bundle

    report = json.loads(Path(validation_path).read_text())
    if not report.get("success"):
        raise ValidationFailed(
            "bundle did not pass validation; no figures are computed", str(validation_path)
        )
    bundle = open_bundle(bundle_dir)
    if report["inputs"] != bundle.inputs:
        raise ValidationFailed(
            "bundle files changed since validation (sha256 differs); validate again", str(bundle_dir)
        )
    scheme = _scheme(scheme_path)
    figures = figures_document(bundle, scheme, report)
    m = bundle.manifest
    path = _write_json(Path(work_dir) / FIGURES_FILE, figures)
    metrics = figures["metrics"]
    log.info(
        "computed %s: IT %.6g kWh, facility %.6g kWh, %.6g output tokens -> %.6g kWh/Mtok, %.6g gCO2e/Mtok",
        m.scope.deployment,
        metrics["it_energy"]["value"],
        metrics["facility_energy"]["value"],
        metrics["output_tokens"]["value"],
        metrics["energy_per_million_tokens"]["value"],
        metrics["carbon_per_million_tokens"]["value"],
    )
    return str(path)


def figures_document(bundle: Any, scheme: Any, report: dict[str, Any]) -> dict[str, Any]:
    """The content of figures.json for ``bundle``, given its validation payload ``report``.

    Pure computation (nothing is written), so a fleet run can compute while the
    bundle's arrays are in memory and write only once validation has passed.
    """
    from greencert.compute.metrics import compute_figures

    if bundle.manifest.segments:
        raise ValidationFailed(
            f"bundle declares {len(bundle.manifest.segments)} segments (a change of engine, model or GPUs): "
            "each segment is certified on its own; split it first (greencert certify does)",
            str(bundle.path),
        )
    fig = compute_figures(bundle, scheme)
    m = bundle.manifest
    figures: dict[str, Any] = {
        "scope": m.scope.model_dump(mode="json", exclude_none=True),
        "period": {"start": m.period.start.isoformat(), "end": m.period.end.isoformat()},
        "metrics": fig.metrics(),
        "methodology": {
            "integration": "trapezoid per device, split at UTC hour boundaries, interpolated at the period edges",
            "power_kind": m.power.kind,
            "power_unit": m.power.unit,
            "max_gap_seconds": scheme.max_gap_seconds if not m.power.max_gap else None,
            "pue": round(fig.pue, 9),
            "pue_basis": fig.pue_basis,
            "grid_basis": fig.grid_basis,
            "grid_source": m.grid.source,
            "hourly_intensity_share": fig.hourly_intensity_share,
            "tokens": "increase of cumulative counters, resets handled as Prometheus increase()",
            "carbon": "location-based: sum over hours of facility energy x grid intensity",
        },
        "data_quality": {
            "coverage": round(fig.coverage, 9),
            "validation_success": True,
            "validation_report": VALIDATION_FILE,
            "expectations_evaluated": sum(s["evaluated_expectations"] for s in report["suites"]),
            "rows": report["rows"],
            "devices": fig.devices,
        },
        "hourly": {
            "hour_start": [int(h) for h in fig.hour_starts],
            "facility_energy_kwh": [float(f"{v:.9g}") for v in fig.facility_energy_hourly_kwh],
            "output_tokens": [float(f"{v:.12g}") for v in fig.output_tokens_hourly],
            "grid_intensity_gco2e_per_kwh": [float(f"{v:.9g}") for v in fig.intensity_hourly],
        },
        "inputs": bundle.inputs,
    }
    # Carbon accounting (docs/carbon.md): location/market/embodied/SCI metrics and their sources.
    from greencert.carbon.report import carbon_report

    carbon = carbon_report(bundle, fig)
    figures["metrics"].update(carbon.metrics)
    figures["carbon"] = carbon.section
    figures["methodology"]["hourly_intensity_share"] = carbon.hourly_intensity_share
    # Scheme 2026.3 (docs/boundary.md): full-stack components, water and figures per 1,000 queries.
    _full_stack(bundle, scheme, fig, figures)
    # Second meters of the same devices (docs/prometheus.md): a mismatch is a finding, not a failure.
    from greencert.compute.crosscheck import crosscheck_meters

    checks = crosscheck_meters(bundle, scheme)
    if checks.summaries:
        figures["data_quality"]["crosschecks"] = checks.summaries
    if checks.findings:
        figures["findings"] = [*figures.get("findings", []), *checks.findings]
    # Scheme 2026.2+: 95 % intervals, meter reconciliation, load regime (docs/uncertainty.md).
    if scheme.integrity is not None:
        from greencert.compute.integrity import assess

        integrity = assess(bundle, scheme, fig, figures)
        for name, interval in integrity.intervals.items():
            figures["metrics"][name]["interval95"] = interval
        figures["methodology"].update(integrity.methodology)
        figures.update(integrity.sections)
    if getattr(scheme, "raw", None) and scheme.raw.get("boundary") and "load_regime" in figures:
        # Scheme 2026.3: cached-prompt and reasoning tokens, where the engine counts them (docs/boundary.md).
        from greencert.compute.boundary import token_types

        by_type = token_types(bundle, fig)
        if by_type is not None:
            figures["load_regime"]["tokens"]["by_type"] = by_type
    if m.attribution is not None:
        # Shared GPUs: the certificate states this deployment's share of each device and the rule.
        figures["methodology"]["attribution"] = {
            "rule": m.attribution.rule,
            "shares": dict(sorted(m.attribution.shares.items())),
            **({"match": dict(m.attribution.match)} if m.attribution.match else {}),
        }
    return figures


def _full_stack(bundle: Any, scheme: Any, fig: Any, figures: dict[str, Any]) -> None:
    """Add the ``boundary``, ``water`` and ``per_query`` sections the scheme asks for (none before 2026.3)."""
    from greencert.compute.boundary import boundary_defaults, boundary_section, per_query, water

    raw = getattr(scheme, "raw", None) or {}
    defaults = boundary_defaults(scheme)
    if defaults is not None and fig.idle_capacity is not None:
        figures["boundary"] = boundary_section(bundle, fig, defaults)
    water_l = None
    if raw.get("water"):
        w = water(bundle, fig)
        if w is not None:
            figures["water"] = w.section
            figures["metrics"]["water_per_million_tokens"] = w.section["per_million_tokens"]
            water_l = w.total_l
    if raw.get("per_query"):
        pq = per_query(bundle, fig, water_l)
        if pq is not None:
            figures["per_query"], metrics = pq
            figures["metrics"].update(metrics)


def grade_stage(figures_path: str | Path, work_dir: str | Path, scheme_path: str | Path | None = None) -> str:
    """Grade figures.json against the scheme; write graded.json."""
    figures = json.loads(Path(figures_path).read_text())
    graded = graded_document(figures, _scheme(scheme_path))
    return str(_write_json(Path(work_dir) / GRADED_FILE, graded))


def graded_document(figures: dict[str, Any], scheme: Any) -> dict[str, Any]:
    """The content of graded.json: the figures with their grades under ``scheme``."""
    from greencert.grading import grade, headline_is_efficiency, measurement_class

    metrics = figures["metrics"]
    grading = grade(
        metrics["energy_per_million_tokens"]["value"],
        metrics["carbon_per_million_tokens"]["value"],
        figures["scope"]["active_params_billions"],
        scheme,
        energy_interval=metrics["energy_per_million_tokens"].get("interval95"),
        carbon_interval=metrics["carbon_per_million_tokens"].get("interval95"),
        measurement=measurement_class(figures) if headline_is_efficiency(scheme) else None,
    )
    graded = dict(figures)
    graded["grading"] = grading
    graded["scheme"] = {"id": scheme.id, "version": scheme.version}
    graded["validity_months"] = scheme.validity_months
    log.info(
        "graded %s: %s (energy %s, carbon %s)",
        figures["scope"]["deployment"],
        grading["overall"],
        grading["energy"],
        grading["carbon"],
    )
    return graded


def publish_stage(
    graded_path: str | Path,
    bundle_dir: str | Path,
    validation_path: str | Path,
    out_dir: str | Path,
    signing_key: str | Path | None = None,
    pdf: bool | None = None,
    *,
    index: bool = True,
    prepared: Any = None,
) -> str:
    """Sign and publish the certificate with its label, reports and evidence; regenerate the registry index
    (unless ``index=False``: a batch of certificates rebuilds it once, see ``greencert.fleet``;
    ``prepared``: documents already built by ``certificate.issue.prepare_certificate``).

    ``out_dir`` is the registry: a local folder or any fsspec URL (``s3://...``).
    Returns the certificate JSON's path. See ``certificate.issue`` for the write order.
    """
    from greencert.certificate.issue import publish_certificate

    graded = json.loads(Path(graded_path).read_text())
    report_bytes = Path(validation_path).read_bytes()
    report = json.loads(report_bytes)
    if not report.get("success") or report["inputs"] != graded["inputs"]:
        raise ValidationFailed(
            "refusing to publish: validation report does not cover these inputs", str(validation_path)
        )
    from greencert.validation.gx import DATA_DOCS_DIR

    docs = Path(validation_path).parent / DATA_DOCS_DIR
    return publish_certificate(
        graded,
        bundle_dir,
        report_bytes,
        out_dir,
        signing_key,
        pdf,
        index=index,
        prepared=prepared,
        data_docs=docs if (docs / "index.html").is_file() else None,
    )


def partial_stage(
    bundle_dir: str | Path,
    validation_path: str | Path,
    figures_path: str | Path,
    partials_dir: str | Path,
    scheme_path: str | Path | None = None,
) -> str:
    """Save the day's partial (hourly sums and the day's figures document) for period certificates."""
    from greencert.bundle import open_bundle
    from greencert.compute.partials import day_partial, save_partial

    report = json.loads(Path(validation_path).read_text())
    figures = json.loads(Path(figures_path).read_text())
    bundle = open_bundle(bundle_dir)
    if not report.get("success") or report["inputs"] != bundle.inputs or figures["inputs"] != bundle.inputs:
        raise ValidationFailed(
            "refusing a partial: validation does not cover these inputs", str(validation_path)
        )
    summary = {
        "success": True,
        "expectations_evaluated": figures["data_quality"]["expectations_evaluated"],
        "rows": report["rows"],
    }
    partial = day_partial(bundle, _scheme(scheme_path), summary, figures)
    return str(save_partial(partial, Path(partials_dir)))


def period_stage(
    partial_paths: list[Path], work_dir: str | Path, scheme_path: str | Path | None = None
) -> tuple[str, str]:
    """A period's (a month's) validation.json and figures.json from its contiguous day partials.

    The same figures document a day has, every section combined from the days (compute/period.py);
    ``grade_stage`` and ``publish_stage`` then issue it like a day. ``verify`` calls this too.
    """
    from greencert.compute.partials import month_figures_document

    figures, _inputs, validation = month_figures_document(list(partial_paths), _scheme(scheme_path))
    work = Path(work_dir)
    validation_path = _write_json(work / VALIDATION_FILE, validation)
    return str(validation_path), str(_write_json(work / FIGURES_FILE, figures))


def certify(
    bundle_dir: str | Path,
    out_dir: str | Path,
    scheme_path: str | Path | None = None,
    work_dir: str | Path | None = None,
    signing_key: str | Path | None = None,
    pdf: bool | None = None,
) -> str:
    """Run every stage on one bundle; return the published certificate's path."""
    from greencert.files import work_directory

    # Like a TemporaryDirectory, but one left by a killed run is removed by the next run.
    with work_directory() as tmp:
        work = Path(work_dir) if work_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        validation = validate_stage(bundle_dir, work, scheme_path)
        figures = compute_stage(bundle_dir, validation, work, scheme_path)
        graded = grade_stage(figures, work, scheme_path)
        return publish_stage(graded, bundle_dir, validation, out_dir, signing_key, pdf)


__all__ = [
    "GreenCertError",
    "certify",
    "compute_stage",
    "figures_document",
    "grade_stage",
    "partial_stage",
    "period_stage",
    "publish_stage",
    "validate_stage",
]

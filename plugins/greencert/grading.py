"""Grading: place certified figures in the A-G bands of a versioned scheme."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greencert.certificate.status import MEASUREMENT_CLASSES
from greencert.errors import BundleError, ConfigError
from greencert.units import Q_
from greencert.yamlio import load_yaml_file

SCHEME_DIR = Path(__file__).parent / "schemes"
# 2026.3: efficiency grade, confirmed grade and measurement class (docs/methodology.md); 2026.1 and
# 2026.2 stay loadable for verification.
DEFAULT_SCHEME = SCHEME_DIR / "greencert-2026.3.yaml"
# Code defaults of data-quality keys added after a scheme was published (a scheme YAML without the
# key gets this value). Plausible output-token rate per GPU: ML.ENERGY leaderboard v3 measured
# Llama-3.1-8B on one H100 at 9,806 output tokens/s (vLLM, max_num_seqs 512); ten times that leaves
# room for smaller models and faster GPUs, and no GPU produces it (docs/methodology.md).
DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU = 100_000.0
# A metered power device (a node) holds at most this many GPUs (HGX/DGX boards carry 8).
MAX_GPUS_PER_POWER_DEVICE = 8


@dataclass(frozen=True)
class SizeClass:
    name: str
    max_active_params_billions: float | None
    energy_band_edges: tuple[float, ...]


@dataclass(frozen=True)
class Integrity:
    """Scheme settings for uncertainty, reconciliation and grading at a confidence level (2026.2+)."""

    defaults: str  # file name under greencert/data
    confidence_level: float
    top_grade_max_relative_halfwidth: float
    add_unmetered_node_energy: bool
    same_layer_tolerance: float
    pue_tolerance: float


@dataclass(frozen=True)
class Scheme:
    id: str
    version: str
    grades: tuple[str, ...]
    size_classes: tuple[SizeClass, ...]
    carbon_reference_intensity: float  # gCO2e/kWh
    min_coverage: float
    max_gap_seconds: float
    max_device_power_w: float
    max_counter_reset_share: float
    max_grid_intensity: float  # gCO2e/kWh
    validity_months: int
    raw: dict[str, Any]
    path: Path
    integrity: Integrity | None = None
    max_output_tokens_per_second_per_gpu: float = DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU

    def size_class(self, active_params_billions: float) -> SizeClass:
        for cls in self.size_classes:
            if (
                cls.max_active_params_billions is None
                or active_params_billions <= cls.max_active_params_billions
            ):
                return cls
        return self.size_classes[-1]

    def carbon_band_edges(self, cls: SizeClass) -> tuple[float, ...]:
        return tuple(edge * self.carbon_reference_intensity for edge in cls.energy_band_edges)


def band(value: float, edges: tuple[float, ...], grades: tuple[str, ...]) -> str:
    """Grade of ``value``: the first band whose upper edge it does not exceed."""
    for edge, grade in zip(edges, grades, strict=False):
        if value <= edge:
            return grade
    return grades[len(edges)]


@functools.cache
def load_scheme(path: Path | str = DEFAULT_SCHEME) -> Scheme:
    path = Path(path)
    raw = load_yaml_file(path, ConfigError, "grading scheme")
    try:
        dq = raw["data_quality"]
        grades = tuple(raw["grades"])
        classes = tuple(
            SizeClass(
                c["name"], c["max_active_params_billions"], tuple(float(e) for e in c["energy_band_edges"])
            )
            for c in raw["size_classes"]
        )
        for cls in classes:
            if len(cls.energy_band_edges) != len(grades) - 1 or list(cls.energy_band_edges) != sorted(
                cls.energy_band_edges
            ):
                raise ConfigError(
                    f"size class {cls.name}: need {len(grades) - 1} increasing band edges", str(path)
                )
        return Scheme(
            id=str(raw["id"]),
            version=str(raw["version"]),
            grades=grades,
            size_classes=classes,
            carbon_reference_intensity=Q_(raw["carbon_reference_intensity"]).to("gCO2e/kWh").magnitude,
            min_coverage=float(dq["min_coverage"]),
            max_gap_seconds=Q_(dq["max_gap"]).to("s").magnitude,
            max_device_power_w=Q_(dq["max_device_power"]).to("W").magnitude,
            max_counter_reset_share=float(dq["max_counter_reset_share"]),
            max_grid_intensity=Q_(dq["max_grid_intensity"]).to("gCO2e/kWh").magnitude,
            validity_months=int(raw["validity"]["months"]),
            raw=raw,
            path=path,
            integrity=_integrity(raw.get("measurement_integrity")),
            max_output_tokens_per_second_per_gpu=float(
                dq.get("max_output_tokens_per_second_per_gpu", DEFAULT_MAX_OUTPUT_TOKENS_PER_SECOND_PER_GPU)
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"grading scheme is incomplete or malformed ({exc!r})", str(path)) from None


def _integrity(section: Any) -> Integrity | None:
    if section is None:
        return None
    if section.get("grade_rule") != "whole_interval_within_band":
        raise ValueError(f"unknown grade_rule {section.get('grade_rule')!r}")
    tol = section["tolerances"]
    return Integrity(
        defaults=str(section["defaults"]),
        confidence_level=float(section["confidence_level"]),
        top_grade_max_relative_halfwidth=float(section["top_grade_max_relative_halfwidth"]),
        add_unmetered_node_energy=bool(section["add_unmetered_node_energy"]),
        same_layer_tolerance=float(tol["same_layer"]),
        pue_tolerance=float(tol["pue"]),
    )


def scheme_by_version(scheme_id: str, version: str) -> Scheme:
    for candidate in sorted(SCHEME_DIR.glob("*.yaml")):
        scheme = load_scheme(candidate)
        if scheme.id == scheme_id and scheme.version == version:
            return scheme
    raise ConfigError(f"no grading scheme {scheme_id} version {version} in {SCHEME_DIR}")


def latest_scheme_version(scheme_id: str) -> str | None:
    """Newest version of ``scheme_id`` among the shipped schemes (versions are ``YYYY.N``), or None."""
    versions = []
    for candidate in sorted(SCHEME_DIR.glob("*.yaml")):
        scheme = load_scheme(candidate)
        if scheme.id == scheme_id:
            versions.append(scheme.version)
    return max(versions, key=version_key) if versions else None


def version_key(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return (-1,)


def current_scheme_version(scheme_id: str) -> str | None:
    """The version certificates of ``scheme_id`` are issued under now: the default scheme's (a newer
    file shipped as a draft, not yet the default, supersedes nothing), else the newest shipped."""
    default = load_scheme(DEFAULT_SCHEME)
    return default.version if default.id == scheme_id else latest_scheme_version(scheme_id)


def is_superseded(scheme_id: str, version: str) -> bool:
    """True when ``version`` is older than the version GreenCert issues ``scheme_id`` under now."""
    current = current_scheme_version(scheme_id)
    return current is not None and version_key(version) < version_key(current)


# ---------------------------------------------------------------- tolerances: the scheme's, tightened only


def _seconds(text: str) -> float:
    return float(Q_(text).to("s").magnitude)


def _watts(text: str) -> float:
    return float(Q_(text).to("W").magnitude)


def effective_max_gap(spec: Any, scheme: Scheme) -> float:
    """Longest gap bridged for a series, in seconds: the manifest's ``max_gap`` if tighter, else the scheme's.

    ``check_manifest_tolerances`` refuses a looser manifest value before anything is computed;
    the min() here keeps every caller safe even without that check.
    """
    value = getattr(spec, "max_gap", None) if spec is not None else None
    return min(_seconds(value), scheme.max_gap_seconds) if value else scheme.max_gap_seconds


def effective_max_device_power(spec: Any, scheme: Scheme, graded_series: bool = True) -> float:
    """Physical ceiling per device, in W. The certified ``power`` series is bound by the scheme's ceiling
    (the manifest may tighten it); other meter layers (node meters, PDUs) have no scheme ceiling, only the
    manifest's if it declares one."""
    value = getattr(spec, "max_device_power", None) if spec is not None else None
    ceiling = scheme.max_device_power_w if graded_series else float("inf")
    return min(_watts(value), ceiling) if value else ceiling


def check_manifest_tolerances(manifest: Any, scheme: Scheme, where: str) -> None:
    """A manifest may tighten the scheme's tolerances, never loosen them: a looser value is a BundleError
    naming the manifest key and the scheme's limit."""
    series = [("power", manifest.power, True)]
    facility = manifest.facility
    series += [("facility.meter", facility.meter, False), ("facility.it_meter", facility.it_meter, False)]
    series += [(f"meters.{m.name}", m, False) for m in manifest.meters]
    limit_text = f"scheme {scheme.id} {scheme.version}"
    for key, spec, graded in series:
        if spec is None:
            continue
        if spec.max_gap and _seconds(spec.max_gap) > scheme.max_gap_seconds:
            raise BundleError(
                f"{key}.max_gap {spec.max_gap!r} is looser than the {limit_text} limit "
                f"max_gap {scheme.max_gap_seconds:g} s (a manifest may tighten the scheme's tolerances, "
                "never loosen them)",
                where,
            )
        if graded and spec.max_device_power and _watts(spec.max_device_power) > scheme.max_device_power_w:
            raise BundleError(
                f"{key}.max_device_power {spec.max_device_power!r} is looser than the {limit_text} limit "
                f"max_device_power {scheme.max_device_power_w:g} W (a manifest may tighten the scheme's "
                "tolerances, never loosen them)",
                where,
            )


def gpu_count(manifest: Any, power_devices: int) -> int:
    """GPUs the token-rate ceiling allows for: the declared ``scope.gpu_count``, bounded by what the metered
    power devices can hold; without a declaration, one GPU per metered power device."""
    declared = getattr(manifest.scope, "gpu_count", None)
    if declared is None:
        return max(1, power_devices)
    return max(1, min(int(declared), MAX_GPUS_PER_POWER_DEVICE * max(1, power_devices)))


# ---------------------------------------------------------------- measurement class (2026.3)

_PDU_CLASSES = ("pdu", "revenue_meter")


def measurement_class(figures: dict[str, Any]) -> dict[str, str]:
    """What the evidence metered, as one of five classes (best first): facility, pdu, node, gpu_only, estimated.

    Read from the figures only (the certified series' meter class, how node parts were covered, how the PUE
    was obtained), so ``verify`` recomputes it. An undeclared class is "estimated", the last, never better.
    """
    layers = figures.get("reconciliation", {}).get("layers") or [{}]
    power_class = layers[0].get("meter_class")
    node = figures.get("reconciliation", {}).get("unmetered_node_parts", {})
    node_basis = figures.get("methodology", {}).get("it_energy_basis") or node.get("basis")
    pue_measured = figures.get("methodology", {}).get("pue_basis") == "measured"
    pue_text = "PUE measured by facility meters" if pue_measured else "PUE declared"
    if power_class is None:
        name = "estimated"
        detail = (
            "the certified power series declares no meter class: read as GPU-only metering, host parts estimated; "
            + pue_text
        )
    elif power_class in _PDU_CLASSES:
        name = "facility" if pue_measured else "pdu"
        detail = f"IT power metered at the PDU ({power_class}); {pue_text}"
    elif node_basis == "whole_node_metered" or node_basis == "node_meter":
        name = "node"
        detail = (
            "whole nodes metered (GPU, host CPU, memory, network); " + pue_text
            if node_basis == "whole_node_metered"
            else "GPUs and node meters metered: host parts measured as node minus GPU; " + pue_text
        )
    else:
        name = "gpu_only"
        detail = "GPU power sensors only: host CPU, memory and network estimated with a cited ratio; " + pue_text
    return {"class": name, "label": MEASUREMENT_CLASSES[name], "detail": detail}


def headline_is_efficiency(scheme: Scheme) -> bool:
    """2026.3+: the letter is the efficiency grade; the confirmed grade and measurement class are stated beside it."""
    return (scheme.raw.get("measurement_integrity") or {}).get("headline_grade") == "efficiency"


def grade(
    energy_per_mtok_kwh: float,
    carbon_per_mtok_g: float,
    active_params_billions: float,
    scheme: Scheme,
    energy_interval: list[float] | None = None,
    carbon_interval: list[float] | None = None,
    measurement: dict[str, str] | None = None,
) -> dict:
    """Grade both figures; the overall grade is the worse of the two.

    With a scheme that grades at a confidence level (2026.2+) and the figures' 95 %
    intervals, a grade is awarded only if the whole interval lies within its band, and
    the top grade also needs an interval no wider than the scheme allows; otherwise the
    lower grade is awarded and ``reasons`` says why. Without intervals (or with an older
    scheme) the point values are graded, as before.

    2026.3+ (``headline_grade: efficiency``): ``overall``/``energy``/``carbon`` are the efficiency grades (the
    bands of the certified figures); ``confirmed`` holds the grades at 95 % confidence, ``measurement`` the
    measurement class, and ``limited_by`` says whether the confirmed letter is held back by metering.
    """
    cls = scheme.size_class(active_params_billions)
    carbon_edges = scheme.carbon_band_edges(cls)
    integrity = scheme.integrity
    at_confidence = integrity is not None and energy_interval is not None and carbon_interval is not None
    reasons: list[str] = []
    point = {
        "energy": band(energy_per_mtok_kwh, cls.energy_band_edges, scheme.grades),
        "carbon": band(carbon_per_mtok_g, carbon_edges, scheme.grades),
    }
    if at_confidence:
        assert integrity is not None and energy_interval is not None and carbon_interval is not None
        energy_grade = _grade_at_confidence(
            "energy", energy_per_mtok_kwh, energy_interval, cls.energy_band_edges, "kWh/Mtok", scheme, reasons
        )
        carbon_grade = _grade_at_confidence(
            "carbon", carbon_per_mtok_g, carbon_interval, carbon_edges, "gCO2e/Mtok", scheme, reasons
        )
    else:
        energy_grade, carbon_grade = point["energy"], point["carbon"]
    overall = max(energy_grade, carbon_grade, key=scheme.grades.index)
    result = {
        "overall": overall,
        "energy": energy_grade,
        "carbon": carbon_grade,
        "size_class": cls.name,
        "energy_band_edges": {"unit": "kWh/Mtok", "upper_edges": list(cls.energy_band_edges)},
        "carbon_band_edges": {"unit": "gCO2e/Mtok", "upper_edges": [round(e, 6) for e in carbon_edges]},
    }
    if at_confidence:
        assert integrity is not None
        result["confidence"] = {
            "level": integrity.confidence_level,
            "rule": "a grade is awarded only if the whole interval lies within its band",
            "top_grade_max_relative_halfwidth": integrity.top_grade_max_relative_halfwidth,
            "point_grades": point,
        }
        result["reasons"] = reasons
    if at_confidence and headline_is_efficiency(scheme):
        assert integrity is not None
        efficiency_overall = max(point["energy"], point["carbon"], key=scheme.grades.index)
        result.update(
            overall=efficiency_overall,
            energy=point["energy"],
            carbon=point["carbon"],
            efficiency={"overall": efficiency_overall, **point},
            confirmed={
                "overall": overall,
                "energy": energy_grade,
                "carbon": carbon_grade,
                "level": integrity.confidence_level,
            },
            limited_by="measurement" if overall != efficiency_overall else "efficiency",
        )
        if measurement is not None:
            result["measurement"] = measurement
    return result


def _grade_at_confidence(
    figure: str,
    value: float,
    interval: list[float],
    edges: tuple[float, ...],
    unit: str,
    scheme: Scheme,
    reasons: list[str],
) -> str:
    """Grade of the interval's upper end (the whole interval must fit the band), then the top-grade width rule."""
    assert scheme.integrity is not None
    low, high = float(interval[0]), float(interval[1])
    grades = scheme.grades
    at_point = band(value, edges, grades)
    awarded = band(high, edges, grades)
    if awarded != at_point:
        edge = edges[grades.index(at_point)]
        reasons.append(
            f"{figure}: the value {value:.4g} {unit} is in band {at_point} (<= {edge:.4g}) but its 95 % "
            f"interval [{low:.4g}, {high:.4g}] reaches {high:.4g}, beyond that band: grade {awarded} awarded"
        )
    limit = scheme.integrity.top_grade_max_relative_halfwidth
    half = max(high - value, value - low) / value if value > 0 else float("inf")
    if awarded == grades[0] and half > limit:
        reasons.append(
            f"{figure}: band {grades[0]} needs a 95 % interval within +-{limit:.0%} of the value; "
            f"[{low:.4g}, {high:.4g}] reaches {half:.1%} from {value:.4g} {unit}: grade {grades[1]} awarded"
        )
        awarded = grades[1]
    return awarded

"""95 % intervals for energy and carbon per million tokens (docs/uncertainty.md).

Method: propagation of distributions by Monte Carlo (JCGM 101:2008, "GUM
Supplement 1"). Every input that is not known exactly gets a distribution:

* the meter's accuracy class (uniform +-a: the meter reads within a of the truth),
  one systematic factor per meter, shared by all its devices and hours;
* sampling between readings: the scatter of each reading around the line through
  its neighbours estimates the part of the power the trapezoid cannot follow
  (normal, independent per hour);
* gaps the integration does not bridge: their energy lies between the lowest and
  highest neighbouring readings (one uniform fraction for all gaps);
* unmetered node parts (a ratio, or the node meter's accuracy), a cross-check
  disagreement between two meters of the GPU layer;
* the PUE (declared: by ISO/IEC 30134-2 category; measured: the two meters);
* grid intensity (per kind of hour: measured, estimated, annual factor);
* embodied carbon (SCI M) when the certificate has it.

Output tokens are counter increases and are taken as exact where the counters
cover the period; under scheme 2026.3 the tokens of uncovered spans are a
source of their own (between 0 and the span x the highest observed rate), and
a gap may hide a peak up to the device's power ceiling. The seed and the
number of draws are fixed by the defaults file the scheme names, so the same
bundle always gives the same interval. Draws are processed in vectorised blocks
of (draws x hours) arrays: no Python loop runs per draw or per hour.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from greencert.bundle.reader import Series
from greencert.errors import ConfigError
from greencert.yamlio import load_yaml_file

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEFAULTS_FORMAT = "greencert-uncertainty/1"
SOURCES = (
    "meter",
    "sampling",
    "gaps",
    "cross_check",
    "node_parts",
    "pue",
    "grid",
    "embodied",
    # Scheme 2026.3 (docs/uncertainty.md): tokens the counters may have missed, and the share of
    # idle provisioned capacity when it is estimated or declared rather than metered.
    "token_coverage",
    "idle_capacity",
)
GRID_KINDS = ("measured_hour", "estimated_hour", "annual_factor")


@functools.cache
def load_defaults(name: str) -> dict[str, Any]:
    """The defaults file a scheme names (``greencert/data/<name>``), checked for the keys the code reads."""
    path = DATA_DIR / name
    if Path(name).name != name:
        raise ConfigError("uncertainty defaults must be a plain file name under greencert/data", name)
    data = load_yaml_file(path, ConfigError, "uncertainty defaults")  # strict: duplicate keys are errors
    if not isinstance(data, dict) or data.get("format") != DEFAULTS_FORMAT:
        raise ConfigError(f"not a {DEFAULTS_FORMAT} file", str(path))
    try:
        for cls in ("gpu_sensor", "node_meter", "pdu", "revenue_meter", "undeclared"):
            float(data["meter_classes"][cls]["accuracy"])
        mc = data["monte_carlo"]
        int(mc["draws"]), int(mc["seed"]), int(mc["block_values"]), int(mc["significant_digits"])
        no = data["node_overhead"]
        if not 1.0 <= float(no["low"]) <= float(no["value"]) <= float(no["high"]):
            raise ValueError("node_overhead needs 1 <= low <= value <= high")
        for cat in (1, 2, 3):
            float(data["pue"]["category"][cat])
        float(data["pue"]["undeclared_category"])
        for kind in GRID_KINDS:
            float(data["grid"][kind])
        for key in ("declared", "default_profile"):
            lo, hi = (float(v) for v in data["embodied"][key])
            if not -1.0 < lo <= 0.0 <= hi:
                raise ValueError(f"embodied.{key} must be [low <= 0, high >= 0] with low > -1")
        int(data["gap_neighbours"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"uncertainty defaults are incomplete or malformed ({exc!r})", str(path)) from None
    return data


def meter_accuracy(spec: Any, defaults: dict[str, Any]) -> tuple[float, str]:
    """Relative accuracy of a series and where it comes from (manifest, else its meter class default)."""
    cls = spec.meter_class or "undeclared"
    if spec.accuracy is not None:
        return float(spec.accuracy), f"declared in the manifest (meter class {cls})"
    entry = defaults["meter_classes"][cls]
    return float(entry["accuracy"]), f"default for meter class {cls}: {entry['source']}"


# --------------------------------------------------------------------------- gaps and sampling


@dataclass(frozen=True)
class GapBounds:
    """Energy unbridged gaps could hold, per hour, between the neighbouring readings' bounds (kWh)."""

    low_kwh: np.ndarray
    high_kwh: np.ndarray
    count: int
    device_seconds: float

    @property
    def mid_kwh(self) -> np.ndarray:
        return 0.5 * (self.low_kwh + self.high_kwh)


def _window_extremes(
    v: np.ndarray, codes: np.ndarray, at: np.ndarray, first: int, last: int
) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``v[i+first .. i+last]`` within the device of row ``i``, for the rows ``at`` only.

    Gaps are rare, so only the readings around them are looked at (not a rolling window over
    every row): the cost is the gaps', not the series'.
    """
    n = v.size
    lo = np.full(at.size, np.inf)
    hi = np.full(at.size, -np.inf)
    own = codes[at]
    for shift in range(first, last + 1):
        j = at + shift
        ok = (j >= 0) & (j < n)
        jj = np.clip(j, 0, n - 1)
        ok &= codes[jj] == own
        lo = np.where(ok, np.minimum(lo, v[jj]), lo)
        hi = np.where(ok, np.maximum(hi, v[jj]), hi)
    return lo, hi


def _spread_over_hours(a: np.ndarray, b: np.ndarray, rate: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum over intervals [a, b) of rate x overlap with each hour bin, without a loop over intervals.

    F(e) = sum_g rate_g * (clip(e, a_g, b_g) - a_g) is evaluated at every edge from
    prefix sums over the intervals sorted by start and by end.
    """
    if a.size == 0:
        return np.zeros(edges.size - 1)

    def ramp(points: np.ndarray) -> np.ndarray:
        # sum over g with points_g < e of rate_g * (e - points_g)
        order = np.argsort(points)
        p, r = points[order], rate[order]
        cum_r = np.concatenate([[0.0], np.cumsum(r)])
        cum_rp = np.concatenate([[0.0], np.cumsum(r * p)])
        k = np.searchsorted(p, edges, side="left")
        return cum_r[k] * edges - cum_rp[k]

    return np.diff(ramp(a) - ramp(b))


@dataclass(frozen=True)
class GapIntervals:
    """Stretches of a gauge series no reading bridges, before clipping to the period.

    Three groups, each an array of rows ``(device, a, b, low, high)``: gaps inside a device's
    readings (longer than ``max_gap``), the lead-in before a device's first reading and the tail
    after its last; ``low``/``high`` are the extremes of the neighbouring readings. Rows are in
    device order, and in row order within a device, so groups of device shards concatenate into
    exactly the groups of the whole series (``combine``).
    """

    inner: np.ndarray
    lead: np.ndarray
    trail: np.ndarray

    @staticmethod
    def empty() -> GapIntervals:
        return GapIntervals(np.empty((0, 5)), np.empty((0, 5)), np.empty((0, 5)))

    @staticmethod
    def combine(parts: list[GapIntervals], device_maps: list[np.ndarray]) -> GapIntervals:
        """The groups of several shards; ``device_maps[k]`` maps shard k's device numbers to the whole's."""

        def group(name: str) -> np.ndarray:
            rows = []
            for part, mapping in zip(parts, device_maps, strict=True):
                g = getattr(part, name).copy()
                g[:, 0] = mapping[g[:, 0].astype(np.int64)]
                rows.append(g)
            out = np.concatenate(rows) if rows else np.empty((0, 5))
            return out[np.argsort(out[:, 0], kind="stable")]

        return GapIntervals(group("inner"), group("lead"), group("trail"))


def gap_intervals(
    series: Series, kind: str, start: float, end: float, max_gap: float, neighbours: int
) -> GapIntervals:
    """The unbridged stretches of ``series`` (a counter bridges its gaps: it measured them, so none)."""
    if kind != "gauge" or series.t.size == 0:
        return GapIntervals.empty()
    t, v, codes = series.t, series.values["value"], series.device_codes
    starts, ends = series.device_bounds()
    present = ends > starts
    devices = np.flatnonzero(present).astype(np.float64)
    starts, ends = starts[present], ends[present]
    # Inner gaps: a step within one device longer than max_gap.
    same = codes[1:] == codes[:-1]
    step = t[1:] - t[:-1]
    inner = np.flatnonzero(same & (step > max_gap))
    lo_before, hi_before = _window_extremes(v, codes, inner, -(neighbours - 1), 0)
    lo_after, hi_after = _window_extremes(v, codes, inner + 1, 0, neighbours - 1)
    inner_rows = np.column_stack(
        [
            codes[inner].astype(np.float64),
            t[inner],
            t[inner + 1],
            np.minimum(lo_before, lo_after),
            np.maximum(hi_before, hi_after),
        ]
    )
    # Edges of the period not reached by a device's readings (no extrapolation in integrate).
    first_t, last_t = t[starts], t[ends - 1]
    lead = first_t > start
    trail = last_t < end
    lo_a, hi_a = _window_extremes(v, codes, starts[lead], 0, neighbours - 1)
    lo_b, hi_b = _window_extremes(v, codes, ends[trail] - 1, -(neighbours - 1), 0)
    lead_rows = np.column_stack([devices[lead], np.full(int(lead.sum()), start), first_t[lead], lo_a, hi_a])
    trail_rows = np.column_stack([devices[trail], last_t[trail], np.full(int(trail.sum()), end), lo_b, hi_b])
    return GapIntervals(inner_rows.reshape(-1, 5), lead_rows.reshape(-1, 5), trail_rows.reshape(-1, 5))


def bounds_of_gaps(
    gaps: GapIntervals,
    to_kwh: float,
    start: float,
    end: float,
    edges: np.ndarray,
    ceiling: float | None = None,
) -> GapBounds:
    """Energy the gaps could hold, per hour (see :func:`gap_bounds`)."""
    rows = np.concatenate([gaps.inner, gaps.lead, gaps.trail])
    a, b = np.clip(rows[:, 1], start, end), np.clip(rows[:, 2], start, end)
    p_lo, p_hi = rows[:, 3], rows[:, 4]
    keep = b > a
    a, b, p_lo, p_hi = a[keep], b[keep], p_lo[keep], p_hi[keep]
    if ceiling is not None:
        p_hi = np.maximum(p_hi, ceiling)
    low = _spread_over_hours(a, b, p_lo, edges) * to_kwh
    high = _spread_over_hours(a, b, p_hi, edges) * to_kwh
    return GapBounds(low, high, int(a.size), float(np.sum(b - a)))


def gap_bounds(
    series: Series,
    kind: str,
    to_kwh: float,
    start: float,
    end: float,
    max_gap: float,
    edges: np.ndarray,
    neighbours: int,
    ceiling: float | None = None,
) -> GapBounds:
    """Gauge gaps longer than ``max_gap`` and the time before a device's first / after its last reading.

    A counter bridges its gaps (it measured them), so it has none. ``to_kwh``
    converts (series unit x second) to kWh. With ``ceiling`` (the device's power
    ceiling in the series unit; scheme ``gap_bound: device_ceiling``) the high
    bound is the ceiling for the whole gap: a gap may hide a peak the readings
    next to it do not show.
    """
    if kind != "gauge" or series.t.size == 0:
        n_hours = edges.size - 1
        return GapBounds(np.zeros(n_hours), np.zeros(n_hours), 0, 0.0)
    gaps = gap_intervals(series, kind, start, end, max_gap, neighbours)
    return bounds_of_gaps(gaps, to_kwh, start, end, edges, ceiling)


def sampling_variance(
    series: Series, kind: str, to_kwh: float, start: float, end: float, max_gap: float, edges: np.ndarray
) -> np.ndarray:
    """Variance (kWh^2) per hour of the trapezoid integral due to power the readings cannot follow.

    Each interior reading's residual from the line through its two neighbours
    estimates the reading noise: for independent noise of variance s^2 the
    residual has variance 1.5 s^2 (equal spacing). The trapezoid integral weighs
    reading i by w_i = half its two intervals, so its error variance is
    sum_i s_d^2 w_i^2. Slow, genuine variation inflates the residuals too, so
    the estimate errs on the wide side. Counters integrate everything: zero.
    """
    return sampling_variance_by_device(series, kind, start, end, max_gap, edges).sum(axis=0) * to_kwh * to_kwh


def sampling_variance_by_device(
    series: Series, kind: str, start: float, end: float, max_gap: float, edges: np.ndarray
) -> np.ndarray:
    """:func:`sampling_variance` per device and hour, in (series unit x second)^2, before the sum over devices.

    Each device's row comes from its own readings only, so device shards stack into the whole's.
    """
    n_hours = edges.size - 1
    n_dev = len(series.devices)
    if kind != "gauge" or series.t.size < 3:
        return np.zeros((n_dev, n_hours))
    t, v = series.t, series.values["value"]
    n = t.size
    step = series.cache.get("dt")
    if step is None:
        step = t[1:] - t[:-1]
    starts, _ = series.device_bounds()
    seg_ok = (step > 0) & (step <= max_gap)
    seg_ok[starts[1:] - 1] = False  # the step into the next device's rows
    bridged = np.where(seg_ok, step, 0.0)
    # Interior readings r = 1 .. n-2 (both neighbouring steps bridged), as slices, not gathers:
    # nearly every reading is interior. Residual from the line through the two neighbours.
    dt_left, dt_right = bridged[:-1], bridged[1:]
    interior = np.zeros(n)
    interior[1:-1] = seg_ok[:-1] & seg_ok[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        line = (v[:-2] * dt_right + v[2:] * dt_left) / (dt_left + dt_right)
    squares = np.zeros(n)
    np.subtract(v[1:-1], line, out=squares[1:-1])
    np.square(squares, out=squares)
    squares[interior == 0] = 0.0  # not interior: no residual (and 0/0 where no step is bridged)
    # Rows are grouped by device: per-device sums over contiguous slices.
    count = np.add.reduceat(interior, starts)
    ss = np.add.reduceat(squares, starts)
    noise_var = np.where(count > 0, ss / np.maximum(count, 1.0) / 1.5, 0.0)  # per device, unit^2
    # w_i = half the two bridged steps next to reading i; the variance of a device-hour is
    # noise_var x sum of w_i^2 over its readings.
    # One entry past the last row (0), so a slice may end at n in reduceat below.
    weight = np.zeros(n + 1)
    weight[1:n] = bridged
    weight[: n - 1] += bridged
    weight *= 0.5
    # Each device's readings in each hour [edges[h], edges[h+1]): contiguous rows (time-ordered
    # within a device, which the fold's validation statistics guarantee before this runs).
    _, ends = series.device_bounds()
    bounds = np.empty((n_dev, edges.size), dtype=np.int64)
    for d, (s_, e_) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        bounds[d] = np.searchsorted(t[s_:e_], edges, side="left") + s_
    np.square(weight, out=weight)
    flat = bounds.ravel()
    sums = np.add.reduceat(weight, flat)
    # reduceat gives weight[i] (not 0) for an empty slice i:i, and each device's last sum runs on.
    nonempty = bounds[:, 1:] > bounds[:, :-1]
    w2 = np.where(nonempty, sums.reshape(bounds.shape)[:, :-1], 0.0)
    return noise_var[:, None] * w2


# --------------------------------------------------------------------------- the model


@dataclass
class Model:
    """Everything the Monte Carlo needs, as per-hour arrays (kWh, gCO2e/kWh) and distribution bounds."""

    tokens_mtok: float
    primary_kwh: np.ndarray
    gaps: GapBounds
    noise_var_kwh2: np.ndarray
    primary_accuracy: float
    intensity: np.ndarray
    grid_kind: np.ndarray  # index into GRID_KINDS per hour
    grid_halfwidth: tuple[float, float, float]
    # IT energy from the primary series: "primary" (as metered), "ratio" or "node_meter".
    it_mode: str = "primary"
    ratio: tuple[float, float, float] = (1.0, 1.0, 1.0)  # value, low, high
    node_kwh: np.ndarray | None = None
    node_accuracy: float = 0.0
    cross_factor: tuple[float, float] | None = None
    pue_mode: str = "declared"
    pue_value: float = 1.0
    pue_halfwidth: float = 0.0
    pue_hourly: np.ndarray | None = None
    facility_accuracy: float = 0.0
    it_meter_accuracy: float = 0.0
    embodied_g: float | None = None
    embodied_bounds: tuple[float, float] = (0.0, 0.0)
    # Scheme 2026.3: most output tokens (Mtok) the uncovered spans could hold (0: no term).
    tokens_missing_high_mtok: float = 0.0
    # Idle provisioned capacity as a share of IT energy: (point, low, high) and whether it is
    # uncertain (not metered). None: no idle-capacity component (schemes before 2026.3).
    idle_share: tuple[float, float, float] | None = None
    idle_uncertain: bool = False

    def idle_factor(self) -> float:
        return 1.0 + self.idle_share[0] if self.idle_share is not None else 1.0

    def point_it_kwh(self) -> np.ndarray:
        if self.it_mode == "ratio":
            return self.primary_kwh * self.ratio[0]
        if self.it_mode == "node_meter":
            assert self.node_kwh is not None
            return np.maximum(self.node_kwh, self.primary_kwh)
        return self.primary_kwh

    def point_facility_kwh(self) -> np.ndarray:
        # Facility energy = (IT + IT x idle share) x PUE (compute/metrics.py, scheme 2026.3).
        if self.pue_mode == "measured":
            assert self.pue_hourly is not None
            return self.point_it_kwh() * self.idle_factor() * self.pue_hourly
        return self.point_it_kwh() * self.idle_factor() * self.pue_value


@dataclass
class Draws:
    energy_per_mtok: np.ndarray
    carbon_per_mtok: np.ndarray
    sci_per_mtok: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _uniform(rng: np.random.Generator, low: float, high: float, n: int, on: bool) -> np.ndarray:
    # Always draw, so that switching one source off does not shift the others' random streams.
    x = rng.uniform(low, high, n) if high > low else np.full(n, low)
    return x if on else np.zeros(n)


def simulate(model: Model, draws: int, seed: int, block_values: int, active: frozenset[str]) -> Draws:
    """Draw energy, carbon (and SCI) per Mtok; sources not in ``active`` stay at their point value.

    Draws go in blocks of about ``block_values`` (draws x hours) numbers; the block size
    follows from the number of hours, so the same bundle always draws the same numbers.
    """
    rng = np.random.default_rng(seed)
    h = model.primary_kwh.size
    block = max(1, min(draws, block_values // max(h, 1)))
    noise_sd = np.sqrt(np.maximum(model.noise_var_kwh2, 0.0))
    gap_low, gap_span = model.gaps.low_kwh, model.gaps.high_kwh - model.gaps.low_kwh
    kind_onehot = np.zeros((len(GRID_KINDS), h))
    kind_onehot[model.grid_kind, np.arange(h)] = 1.0
    out_e, out_c, out_s = [], [], []
    done = 0
    while done < draws:
        n = min(block, draws - done)
        done += n
        a = model.primary_accuracy
        e_meter = _uniform(rng, -a, a, n, "meter" in active)
        u_gap = rng.uniform(0.0, 1.0, n)
        noise = rng.standard_normal((n, h)) * noise_sd
        primary = model.primary_kwh[None, :] + (
            gap_low[None, :] + u_gap[:, None] * gap_span[None, :] if "gaps" in active else 0.0
        )
        if "sampling" in active:
            primary = primary + noise
        primary = primary / (1.0 + e_meter)[:, None]
        lo, hi = model.cross_factor or (1.0, 1.0)
        cross = rng.uniform(lo, hi, n) if hi > lo else np.ones(n)
        if "cross_check" in active:
            primary = primary * cross[:, None]
        ratio = rng.uniform(model.ratio[1], model.ratio[2], n) if model.ratio[2] > model.ratio[1] else None
        e_node = _uniform(rng, -model.node_accuracy, model.node_accuracy, n, "node_parts" in active)
        if model.it_mode == "ratio":
            r = ratio if ratio is not None and "node_parts" in active else np.full(n, model.ratio[0])
            it = primary * r[:, None]
        elif model.it_mode == "node_meter":
            assert model.node_kwh is not None
            node_true = model.node_kwh[None, :] / (1.0 + e_node)[:, None]
            it = np.where((model.node_kwh >= model.primary_kwh)[None, :], node_true, primary)
        else:
            it = primary
        if model.pue_mode == "measured":
            assert model.pue_hourly is not None
            e_fac = _uniform(rng, -model.facility_accuracy, model.facility_accuracy, n, "pue" in active)
            e_itm = _uniform(rng, -model.it_meter_accuracy, model.it_meter_accuracy, n, "pue" in active)
            factor = (1.0 + e_itm) / (1.0 + e_fac)
            facility = it * model.pue_hourly[None, :] * factor[:, None]
        else:
            q = _uniform(rng, -model.pue_halfwidth, model.pue_halfwidth, n, "pue" in active)
            facility = it * (model.pue_value * (1.0 + q))[:, None]
        g = np.stack(
            [_uniform(rng, -w, w, n, "grid" in active) for w in model.grid_halfwidth], axis=1
        )  # (n, kinds)
        intensity = model.intensity[None, :] * (1.0 + g @ kind_onehot)
        carbon = np.einsum("nh,nh->n", facility, intensity)
        energy = facility.sum(axis=1)
        m = None
        if model.embodied_g is not None:
            lo_m, hi_m = model.embodied_bounds
            m = _uniform(rng, lo_m, hi_m, n, "embodied" in active)
        # 2026.3 sources draw after all the others, and only when the model has them, so that
        # a bundle without them (every 2026.2 bundle) draws exactly the numbers it drew before.
        if model.idle_share is not None:
            s0, s_lo, s_hi = model.idle_share
            share = rng.uniform(s_lo, s_hi, n) if s_hi > s_lo else np.full(n, s0)
            if not (model.idle_uncertain and "idle_capacity" in active):
                share = np.full(n, s0)
            energy = energy * (1.0 + share)
            carbon = carbon * (1.0 + share)
        tokens = np.full(n, model.tokens_mtok)
        if model.tokens_missing_high_mtok > 0:
            u_tok = rng.uniform(0.0, 1.0, n)
            if "token_coverage" in active:
                tokens = tokens + u_tok * model.tokens_missing_high_mtok
        out_e.append(energy / tokens)
        out_c.append(carbon / tokens)
        if m is not None:
            assert model.embodied_g is not None
            out_s.append((carbon + model.embodied_g * (1.0 + m)) / tokens)
    return Draws(np.concatenate(out_e), np.concatenate(out_c), np.concatenate(out_s) if out_s else None)


# --------------------------------------------------------------------------- intervals


def _round_out(x: float, digits: int, up: bool) -> float:
    """Round ``x`` to ``digits`` significant digits, away from the value it bounds (floor or ceiling)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    exp = math.floor(math.log10(abs(x))) - digits + 1
    scaled = x / 10.0**exp
    n = math.ceil(scaled - 1e-9) if up else math.floor(scaled + 1e-9)
    return float(f"{n * 10.0**exp:.{digits}g}") if n != 0 else 0.0


def interval95(draws: np.ndarray, point: float, digits: int) -> list[float]:
    """Central 95 % of the draws, widened to contain the certified value, rounded outwards."""
    low, high = np.quantile(draws, [0.025, 0.975])
    low, high = min(float(low), point), max(float(high), point)
    return [_round_out(low, digits, up=False), _round_out(high, digits, up=True)]


def relative_range(draws: np.ndarray, point: float) -> list[float]:
    """The central 95 % of the draws relative to the point value (e.g. [-0.05, 0.07])."""
    if point == 0:
        return [0.0, 0.0]
    low, high = np.quantile(draws, [0.025, 0.975])
    return [round(float(low / point - 1.0), 4), round(float(high / point - 1.0), 4)]

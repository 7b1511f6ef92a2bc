"""Pull raw telemetry from Prometheus into an evidence bundle (Parquet + manifest).

How raw samples come out of ``/api/v1/query_range``: a range query evaluates a selector at fixed
steps and answers, at each step, the latest sample within the lookback window, stamped with the
step time. Taken alone that would repeat a sample at several steps, hide gaps shorter than the
lookback (5 min) and shift every sample to the step grid. So each selector ``S`` is pulled with
``timestamp(S)`` beside it: pairing the two gives every sample with its own timestamp, repeats are
dropped, and gaps stay gaps. With a step no longer than the scrape interval every sample is seen.

Prometheus answers at most 11,000 points per series, so a long window is split into chunks of the
same step grid; because samples carry their own timestamps, a sample seen at the last step of one
chunk and the first step of the next is kept once, and none falls between chunks.

The grid is anchored at the period end (``end, end - step, ...``) and its first step lies at or
before the period start, so the last sample at or before the start is pulled too (the integrator
interpolates at the period edges); samples older than what validation accepts (the start minus the
largest bridged gap) are dropped.

Any failed request, an empty selector or an inconsistent answer raises :class:`SourceError` before
anything is written: there is no bundle, hence no certificate, from a partial pull.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greencert.bundle.manifest import FORMAT, MANIFEST_NAME, parse_manifest
from greencert.bundle.writer import write_bundle
from greencert.errors import BundleError, ConfigError, SourceError
from greencert.sources.profiles import (
    ROLE_FACILITY,
    ROLE_IT,
    ROLE_POWER,
    ROLE_TOKENS,
    Plan,
    Selector,
    build_selector,
    canonical_labels,
    resolve_plan,
    series_name,
)

if TYPE_CHECKING:
    from greencert.config import DeploymentConfig, FleetConfig
    from greencert.sources.prometheus_hook import PrometheusHook

log = logging.getLogger("greencert")

# Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS = 11_000
STATIC_MANIFEST_KEYS = ("scope", "facility", "grid", "power")

SeriesKey = tuple[tuple[str, str], ...]


def plan_chunks(
    start_ms: int, end_ms: int, step_ms: int, max_points: int = MAX_POINTS
) -> list[tuple[int, int]]:
    """Split the evaluation grid ``end, end - step, ...`` (first step <= start) into query windows.

    Returns ``(first, last)`` evaluation times in ms, both inclusive, ascending; each window holds at
    most ``max_points`` steps and together they hold every step of the grid exactly once.
    """
    if step_ms <= 0:
        raise ValueError(f"step must be positive, not {step_ms} ms")
    if end_ms < start_ms:
        raise ValueError("end is before start")
    if max_points < 1:
        raise ValueError("max_points must be at least 1")
    n_steps = -(-(end_ms - start_ms) // step_ms) + 1  # ceil: the first step is at or before start
    first = end_ms - (n_steps - 1) * step_ms
    return [
        (first + i * step_ms, first + (min(n_steps, i + max_points) - 1) * step_ms)
        for i in range(0, n_steps, max_points)
    ]


def _key(metric: Mapping[str, str]) -> SeriesKey:
    return tuple(sorted((k, v) for k, v in metric.items() if k != "__name__"))


def _to_ms(values: np.ndarray) -> np.ndarray:
    return np.round(values * 1000.0).astype(np.int64)


def _matrix(result: list[dict[str, Any]], query: str) -> dict[SeriesKey, tuple[np.ndarray, np.ndarray]]:
    """A matrix answer as {series key: (evaluation times in ms, values as float)}."""
    out: dict[SeriesKey, tuple[np.ndarray, np.ndarray]] = {}
    for series in result:
        try:
            metric = series["metric"]
            points = series["values"]
            evals = np.array([p[0] for p in points], dtype=np.float64)
            values = np.array([p[1] for p in points], dtype=np.float64)  # "NaN", "+Inf" parse too
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise SourceError(f"malformed series in the answer ({exc})", f"query {query}") from None
        key = _key(metric)
        if key in out:
            raise SourceError(
                f"two series with the labels {{{canonical_labels(dict(key))}}}: the selector must match "
                "a single metric name",
                f"query {query}",
            )
        out[key] = (_to_ms(evals), values)
    return out


def pair_samples(
    value_result: list[dict[str, Any]], time_result: list[dict[str, Any]], query: str
) -> dict[SeriesKey, tuple[np.ndarray, np.ndarray]]:
    """Join ``S`` and ``timestamp(S)`` answers: {series: (sample times in ms, values)}, repeats kept."""
    values = _matrix(value_result, query)
    times = _matrix(time_result, f"timestamp({query})")
    if values.keys() != times.keys():
        odd = sorted(set(values) ^ set(times))[0]
        raise SourceError(
            f"series {{{canonical_labels(dict(odd))}}} is in only one of the value and timestamp answers "
            "(data changed during the pull?)",
            f"query {query}",
        )
    out = {}
    for key, (evals, vals) in values.items():
        t_evals, sample_s = times[key]
        if not np.array_equal(evals, t_evals):
            raise SourceError(
                f"series {{{canonical_labels(dict(key))}}}: the value and timestamp answers have different "
                "steps (data changed during the pull?)",
                f"query {query}",
            )
        out[key] = (_to_ms(sample_s), vals)
    return out


def stitch(parts: list[tuple[np.ndarray, np.ndarray]], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-chunk (sample times ms, values) of one series: sorted, each sample once."""
    t = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    v = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    repeat = np.zeros(t.size, dtype=bool)
    repeat[1:] = t[1:] == t[:-1]
    # A sample repeated at several steps must read the same each time (NaN equals NaN here).
    same = (v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1]))
    clash = repeat[1:] & ~same
    if clash.any():
        i = int(np.argmax(clash)) + 1
        raise SourceError(
            f"the sample at {_iso(int(t[i]))} read {float(v[i - 1])!r} and {float(v[i])!r} in two answers",
            where,
        )
    return t[~repeat], v[~repeat]


@dataclass
class Pulled:
    """Every series one selector returned, as raw samples, plus what the provenance records."""

    query: str
    series: dict[SeriesKey, tuple[np.ndarray, np.ndarray]]
    requests: int


class Puller:
    """Pull selectors over one period with a fixed step grid, chunked and stitched."""

    def __init__(self, hook: PrometheusHook, start: dt.datetime, end: dt.datetime, step_seconds: float):
        self.hook = hook
        self.start_ms = round(start.timestamp() * 1000)
        self.end_ms = round(end.timestamp() * 1000)
        self.step_ms = round(step_seconds * 1000)
        if self.step_ms < 1:
            raise ConfigError(f"step_seconds {step_seconds} is below Prometheus' 1 ms resolution")
        self.chunks = plan_chunks(self.start_ms, self.end_ms, self.step_ms)

    def pull(self, query: str, keep_from_ms: int, required: bool = True) -> Pulled:
        """Raw samples of every series of ``query`` with times in [keep_from_ms, period end].

        No series at all is an error, unless ``required`` is false (then ``series`` is empty).
        """
        parts: dict[SeriesKey, list[tuple[np.ndarray, np.ndarray]]] = {}
        step = self.step_ms / 1000
        for first, last in self.chunks:
            values = self.hook.query_range(query, first / 1000, last / 1000, step)
            times = self.hook.query_range(f"timestamp({query})", first / 1000, last / 1000, step)
            for key, samples in pair_samples(values, times, query).items():
                parts.setdefault(key, []).append(samples)
        series = {}
        for key in sorted(parts):
            t, v = stitch(parts[key], f"query {query}, series {{{canonical_labels(dict(key))}}}")
            keep = t >= keep_from_ms
            if keep.any():
                series[key] = (t[keep], v[keep])
        if not series and required:
            raise SourceError(
                f"no samples between {_iso(self.start_ms)} and {_iso(self.end_ms)}: the metric or its labels "
                "do not match what the server holds (check the profile and the deployment's labels)",
                f"query {query}",
            )
        return Pulled(query, series, 2 * len(self.chunks))


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _named(pulled: Pulled, template: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    named: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    origin: dict[str, SeriesKey] = {}
    for key, samples in pulled.series.items():
        name = series_name(template, dict(key), pulled.query)
        if name in named:
            raise SourceError(
                f"series {{{canonical_labels(dict(origin[name]))}}} and {{{canonical_labels(dict(key))}}} "
                f"both get the name {name!r} (template {template!r}); add a label matcher or a more "
                "specific template to the profile",
                f"query {pulled.query}",
            )
        named[name] = samples
        origin[name] = key
    return dict(sorted(named.items()))


def _meter_table(named: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    devices = list(named)
    return {
        "timestamp": np.concatenate([named[d][0] for d in devices]) / 1000.0,
        "device": np.repeat(np.array(devices), [named[d][0].size for d in devices]),
        "value": np.concatenate([named[d][1] for d in devices]),
    }


def _token_table(
    output: Mapping[str, tuple[np.ndarray, np.ndarray]],
    inputs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    queries: tuple[str, str],
) -> tuple[dict[str, np.ndarray], int]:
    """Output and input counters of each instance on their common sample times; rows dropped."""
    if output.keys() != inputs.keys():
        odd = sorted(set(output) ^ set(inputs))[0]
        which = queries[1] if odd in output else queries[0]
        raise SourceError(
            f"instance {odd!r} has no series for {which} (output and input counters must come in pairs)",
            f"queries {queries[0]} and {queries[1]}",
        )
    t_parts, i_parts, o_parts, n_parts = [], [], [], []
    dropped = 0
    for name in output:
        t_out, v_out = output[name]
        t_in, v_in = inputs[name]
        # Both counters come from the same scrape, so their samples share timestamps; a sample of one
        # without the other (scrape cut mid-way) is dropped: a counter loses no increase by that.
        common, i_out, i_in = np.intersect1d(t_out, t_in, assume_unique=True, return_indices=True)
        dropped += t_out.size + t_in.size - 2 * common.size
        t_parts.append(common)
        o_parts.append(v_out[i_out])
        i_parts.append(v_in[i_in])
        n_parts.append(np.full(common.size, name))
    table = {
        "timestamp": np.concatenate(t_parts) / 1000.0,
        "instance": np.concatenate(n_parts),
        "output_tokens": np.concatenate(o_parts),
        "input_tokens": np.concatenate(i_parts),
    }
    if table["timestamp"].size == 0:
        raise SourceError(
            "output and input token counters share no sample time", f"queries {queries[0]} and {queries[1]}"
        )
    return table, dropped


def build_manifest(
    dep: DeploymentConfig, plan: Plan, start: dt.datetime, end: dt.datetime, where: str
) -> dict[str, Any]:
    """The bundle manifest minus provenance; checked before any request is sent."""
    src = dep.source
    static = dict(src.manifest)
    unknown = sorted(set(static) - set(STATIC_MANIFEST_KEYS))
    if unknown:
        raise ConfigError(
            f"source.manifest has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(STATIC_MANIFEST_KEYS)}",
            where,
        )
    scope = dict(static.get("scope") or {})
    scope.setdefault("deployment", dep.deployment)
    if scope["deployment"] != dep.deployment:
        raise ConfigError(
            f"source.manifest.scope.deployment {scope['deployment']!r} differs from the deployment name",
            where,
        )
    facility = dict(static.get("facility") or {})
    if plan.facility is not None:
        facility["meter"] = plan.facility.meter.spec("facility_meter.parquet")
        facility["it_meter"] = plan.facility.it_meter.spec("it_meter.parquet")
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "scope": scope,
        "period": {"start": _stamp(start), "end": _stamp(end)},
        "power": {**plan.power.spec("power.parquet"), **(static.get("power") or {})},
        "tokens": {"file": "tokens.parquet"},
        "facility": facility,
        "grid": static.get("grid"),
        "meters": [m.spec(f"{m.name}.parquet") for m in plan.meters],
    }
    if not manifest["meters"]:
        del manifest["meters"]
    try:
        parse_manifest(manifest, f"{where}: source.manifest")
    except BundleError as exc:
        raise ConfigError(f"the bundle manifest would be invalid: {exc.problem}", where) from None
    return manifest


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _max_gap_ms(max_gap: str | None, default_s: float) -> int:
    if max_gap:
        from greencert.units import Q_

        return round(Q_(max_gap).to("s").magnitude * 1000)
    return round(default_s * 1000)


def extract_prometheus(
    cfg: FleetConfig,
    dep: DeploymentConfig,
    start: dt.datetime,
    end: dt.datetime,
    target: Path,
    hook: PrometheusHook | None = None,
) -> Path:
    """Pull one deployment's period from Prometheus and write its bundle at ``target`` (atomically)."""
    from greencert.grading import DEFAULT_SCHEME, load_scheme

    src = dep.source
    where = f"fleet config: deployment {dep.deployment}"
    names = [src.profile] if isinstance(src.profile, str) else list(src.profile)
    plan = resolve_plan(names, cfg.source_profiles, where)
    unknown_roles = sorted(set(src.series_labels) - set(plan.roles()))
    if unknown_roles:
        raise ConfigError(
            f"series_labels for {', '.join(unknown_roles)}, which the profiles do not pull; "
            f"roles: {', '.join(plan.roles())}",
            where,
        )
    manifest = build_manifest(dep, plan, start, end, where)
    scheme_gap = load_scheme(cfg.scheme_path or DEFAULT_SCHEME).max_gap_seconds

    if hook is None:
        from greencert.sources.prometheus_hook import PrometheusHook

        hook = PrometheusHook(src.conn_id)
    build = hook.build_info()  # first request: an unreachable server fails here, before any query
    puller = Puller(hook, start, end, src.step_seconds)

    queries: list[dict[str, Any]] = []

    def pull(role: str, sel: Selector, max_gap: str | None, required: bool = True) -> Pulled:
        # Both token counters share the role "tokens" for series_labels.
        labels = {**src.labels, **src.series_labels.get(role.split(".")[0], {})}
        # Keep what validation accepts: nothing older than the start minus the largest bridged gap.
        keep_from = puller.start_ms - _max_gap_ms(max_gap, scheme_gap)
        pulled = puller.pull(build_selector(sel, labels), keep_from, required)
        queries.append(
            {
                "role": role,
                "query": pulled.query,
                "sample_times": f"timestamp({pulled.query})",
                "series": len(pulled.series),
                "samples": int(sum(t.size for t, _ in pulled.series.values())),
            }
        )
        if not pulled.series:
            queries[-1]["absent"] = True
        return pulled

    power = _named(pull(ROLE_POWER, plan.power, manifest["power"].get("max_gap")), plan.power.device)
    gpu_count = manifest["scope"].get("gpu_count")
    if gpu_count is not None and plan.power.meter_class == "gpu_sensor" and len(power) != gpu_count:
        raise SourceError(
            f"scope.gpu_count is {gpu_count} but the power query returned {len(power)} GPU series "
            f"({', '.join(power)}): a missing series would understate the energy",
            f"query {queries[-1]['query']}",
        )
    tables: dict[str, dict[str, np.ndarray]] = {"power.parquet": _meter_table(power)}

    out = pull(f"{ROLE_TOKENS}.output", plan.tokens.output, None)
    inp = pull(f"{ROLE_TOKENS}.input", plan.tokens.input, None)
    tokens, dropped = _token_table(
        _named(out, plan.tokens.instance), _named(inp, plan.tokens.instance), (out.query, inp.query)
    )
    tables["tokens.parquet"] = tokens

    absent = set()
    for meter in plan.meters:
        pulled = pull(meter.name, meter, meter.max_gap, meter.required)
        if not pulled.series:
            absent.add(meter.name)  # an optional layer this deployment does not export
            continue
        tables[f"{meter.name}.parquet"] = _meter_table(_named(pulled, meter.device))
    if "meters" in manifest:
        manifest["meters"] = [m for m in manifest["meters"] if m["name"] not in absent]
        if not manifest["meters"]:
            del manifest["meters"]
    if plan.facility is not None:
        for role, sel, file in (
            (ROLE_FACILITY, plan.facility.meter, "facility_meter.parquet"),
            (ROLE_IT, plan.facility.it_meter, "it_meter.parquet"),
        ):
            tables[file] = _meter_table(_named(pull(role, sel, sel.max_gap), sel.device))

    manifest["provenance"] = {
        "source": "prometheus",
        "server": hook.base_url,
        "connection": src.conn_id,
        "prometheus_version": build.get("version", "unknown"),
        "prometheus_revision": build.get("revision", "unknown"),
        "profiles": plan.profiles,
        "step_seconds": src.step_seconds,
        "chunks": len(puller.chunks),
        "max_points_per_request": MAX_POINTS,
        "method": "raw samples: each selector S with timestamp(S) over /api/v1/query_range, "
        "repeats dropped, chunks stitched by sample timestamp",
        "queries": queries,
        "token_rows_dropped_unpaired": dropped,
    }
    path = write_bundle(target, manifest, tables)
    log.info(
        "pulled %s from %s (Prometheus %s): %s -> %s",
        dep.deployment,
        hook.base_url,
        manifest["provenance"]["prometheus_version"],
        ", ".join(f"{q['role']} {q['series']} series / {q['samples']} samples" for q in queries),
        Path(path) / MANIFEST_NAME,
    )
    return path

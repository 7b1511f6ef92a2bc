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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from greencert.bundle.manifest import FORMAT, MANIFEST_NAME, parse_manifest
from greencert.bundle.writer import write_bundle
from greencert.config import DeploymentConfig, FleetConfig, PrometheusSource
from greencert.errors import BundleError, ConfigError, SourceError
from greencert.sources.profiles import (
    ROLE_FACILITY,
    ROLE_IT,
    ROLE_POWER,
    ROLE_REQUESTS,
    ROLE_TOKENS,
    Plan,
    Selector,
    build_selector,
    canonical_labels,
    resolve_plan,
    series_name,
)
from greencert.times import stamp, stamp_exact, stamp_ms

if TYPE_CHECKING:  # the hook imports Airflow: only where a pull runs
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
            f"the sample at {stamp_exact(int(t[i]) / 1000)} read {float(v[i - 1])!r} and {float(v[i])!r} in two answers",
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
    """Pull selectors over one period with a fixed step grid, chunked and stitched.

    The grid runs past the period end by ``after_seconds`` (rounded up to whole steps) so that the
    first sample after the end is seen too: the integrator interpolates at both edges, and
    consecutive periods then add up exactly to the longer one.
    """

    def __init__(
        self,
        hook: PrometheusHook,
        start: dt.datetime,
        end: dt.datetime,
        step_seconds: float,
        after_seconds: float = 0.0,
    ):
        self.hook = hook
        self.start_ms = round(start.timestamp() * 1000)
        self.end_ms = round(end.timestamp() * 1000)
        self.step_ms = round(step_seconds * 1000)
        if self.step_ms < 1:
            raise ConfigError(f"step_seconds {step_seconds} is below Prometheus' 1 ms resolution")
        after_steps = -(-round(after_seconds * 1000) // self.step_ms)
        # Still anchored at the period end: the end itself stays a grid point.
        self.grid_end_ms = self.end_ms + after_steps * self.step_ms
        self.chunks = plan_chunks(self.start_ms, self.grid_end_ms, self.step_ms)

    def pull(self, query: str, keep_from_ms: int, required: bool = True, keep_after_ms: int = 0) -> Pulled:
        """Raw samples of every series of ``query`` with times in [keep_from_ms, period end], plus
        the first sample after the end if it is within ``keep_after_ms`` and no sample lies on the end.

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
            keep = (t >= keep_from_ms) & (t <= self.end_ms)
            after = np.flatnonzero(t > self.end_ms)
            ends_on_edge = bool(keep.any()) and int(t[keep][-1]) == self.end_ms
            if after.size and not ends_on_edge and t[after[0]] <= self.end_ms + keep_after_ms:
                keep[after[0]] = True
            if keep.any():
                series[key] = (t[keep], v[keep])
        if not series and required:
            raise SourceError(
                f"no samples between {stamp_exact(self.start_ms / 1000)} and {stamp_exact(self.end_ms / 1000)}: the metric or its labels "
                "do not match what the server holds (check the profile and the deployment's labels)",
                f"query {query}",
            )
        return Pulled(query, series, 2 * len(self.chunks))


# --- physical identity: stitching label churn, MIG repetition -------------------------------------
# Labels that say *what a GPU is* (dcgm-exporter's render_metrics.go); everything else a series may
# carry (pod, namespace, container from the Kubernetes mapping, instance, job) can change while the
# device stays the same.
UUID_LABEL = "UUID"
MIG_INSTANCE_LABEL = "GPU_I_ID"
MIG_PROFILE_LABEL = "GPU_I_PROFILE"
WORKLOAD_LABELS = ("namespace", "pod", "container")


@dataclass
class MigInstance:
    """One MIG GPU instance (GPU UUID + GPU_I_ID) and the workload labels it carried over time."""

    gpu_instance: str
    profile: str
    holders: list[dict[str, Any]]  # [{labels: {namespace, pod, container}, first, last}] in time order


@dataclass
class Device:
    """The raw samples of one physical device, stitched from every series that measured it."""

    name: str
    t: np.ndarray
    v: np.ndarray
    members: list[SeriesKey]  # label sets, by time of first sample
    spans: list[tuple[int, int]]  # first and last sample time (ms) of each member
    repeated: int = 0  # samples reported by more than one series (MIG instances repeating GPU power)
    uuid: str | None = None
    mig: dict[str, MigInstance] = field(default_factory=dict)

    def label_changes(self) -> list[dict[str, Any]]:
        """Where the stitched series hand over: time and the labels that changed."""
        out = []
        for i in range(1, len(self.members)):
            la, lb = dict(self.members[i - 1]), dict(self.members[i])
            changed = {k: [la.get(k), lb.get(k)] for k in sorted(set(la) | set(lb)) if la.get(k) != lb.get(k)}
            out.append({"at": stamp_ms(self.spans[i][0] / 1000), "changed": changed})
        return out

    def scrape_interval_s(self) -> float | None:
        return float(np.median(np.diff(self.t))) / 1000 if self.t.size > 1 else None


def _label_text(key: SeriesKey) -> str:
    return "{" + canonical_labels(dict(key)) + "}"


def _stitch_device(name: str, members: list[tuple[SeriesKey, np.ndarray, np.ndarray]], where: str) -> Device:
    """Join the series of one device in time order; same-time repeats must agree, spans must not
    otherwise overlap (two sources for one device are an error naming both label sets)."""
    members = sorted(members, key=lambda m: (int(m[1][0]), m[0]))
    uuids = sorted({dict(k)[UUID_LABEL] for k, _, _ in members if dict(k).get(UUID_LABEL)})
    if len(uuids) > 1:
        raise SourceError(
            f"device {name!r} is named for series of {len(uuids)} physical GPUs (UUID {', '.join(uuids)}); "
            "a GPU swapped within the period needs its own name (add {UUID} to the profile's device template)",
            where,
        )
    for i, (ka, ta, va) in enumerate(members):
        for kb, tb, vb in members[i + 1 :]:
            lo, hi = max(ta[0], tb[0]), min(ta[-1], tb[-1])
            if lo > hi:
                continue  # one after the other: label churn, stitched
            in_a = (ta >= lo) & (ta <= hi)
            in_b = (tb >= lo) & (tb <= hi)
            same_times = np.array_equal(ta[in_a], tb[in_b])
            if same_times and np.array_equal(va[in_a], vb[in_b], equal_nan=True):
                continue  # the same scrape repeated (MIG: whole-GPU power per GPU instance)
            if same_times:
                bad = int(np.argmax(va[in_a] != vb[in_b]))
                detail = (
                    f"at {stamp_ms(int(ta[in_a][bad]) / 1000)} one reads {float(va[in_a][bad])!r}, "
                    f"the other {float(vb[in_b][bad])!r}"
                )
            else:
                detail = "their samples interleave"
            raise SourceError(
                f"series {_label_text(ka)} and {_label_text(kb)} both measure device {name!r} and overlap "
                f"from {stamp_ms(int(lo) / 1000)} to {stamp_ms(int(hi) / 1000)} with different samples ({detail}); "
                "two sources for one device: add a label matcher or a more specific device template",
                where,
            )
    t = np.concatenate([m[1] for m in members])
    v = np.concatenate([m[2] for m in members])
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    first = np.ones(t.size, dtype=bool)
    first[1:] = t[1:] != t[:-1]
    device = Device(
        name,
        t[first],
        v[first],
        [m[0] for m in members],
        [(int(m[1][0]), int(m[1][-1])) for m in members],
        repeated=int((~first).sum()),
        uuid=uuids[0] if uuids else None,
    )
    for key, ts, _ in members:
        labels = dict(key)
        gi = labels.get(MIG_INSTANCE_LABEL)
        if gi is None:
            continue
        inst = device.mig.setdefault(gi, MigInstance(gi, labels.get(MIG_PROFILE_LABEL, ""), []))
        if labels.get(MIG_PROFILE_LABEL, "") != inst.profile:
            raise SourceError(
                f"MIG instance {gi} of device {name!r} changes profile ({inst.profile!r} -> "
                f"{labels.get(MIG_PROFILE_LABEL)!r}) within the period; certify the periods apart",
                where,
            )
        held = {k: labels[k] for k in WORKLOAD_LABELS if labels.get(k)}
        inst.holders.append({"labels": held, "first": int(ts[0]), "last": int(ts[-1])})
    return device


def identify(pulled: Pulled, template: str | None) -> dict[str, Device]:
    """Group a selector's series by physical device (the name template) and stitch each group."""
    groups: dict[str, list[tuple[SeriesKey, np.ndarray, np.ndarray]]] = {}
    for key, (t, v) in pulled.series.items():
        name = series_name(template, dict(key), pulled.query)
        groups.setdefault(name, []).append((key, t, v))
    where = f"query {pulled.query}"
    return {name: _stitch_device(name, groups[name], where) for name in sorted(groups)}


def device_report(devices: Mapping[str, Device]) -> list[dict[str, Any]]:
    """What ``sources check`` and the provenance show per physical device."""
    out = []
    for d in devices.values():
        row: dict[str, Any] = {"device": d.name, "series": len(d.members), "samples": int(d.t.size)}
        if d.uuid:
            row["uuid"] = d.uuid
        interval = d.scrape_interval_s()
        if interval is not None:
            row["scrape_interval_seconds"] = interval
        changes = d.label_changes() if not d.mig else []
        if changes:
            row["stitched"] = changes
        if d.repeated:
            row["repeated_samples_dropped"] = d.repeated
        if d.mig:
            row["mig_instances"] = [
                {
                    "gpu_instance": m.gpu_instance,
                    "profile": m.profile,
                    "holders": [
                        {
                            "labels": h["labels"],
                            "from": stamp_ms(h["first"] / 1000),
                            "to": stamp_ms(h["last"] / 1000),
                        }
                        for h in m.holders
                    ],
                }
                for m in sorted(
                    d.mig.values(), key=lambda m: int(m.gpu_instance) if m.gpu_instance.isdigit() else 0
                )
            ]
        out.append(row)
    return out


# --- token counters: one chain per instance slot, replaced pods joined in time order ---------------
@dataclass
class TokenChain:
    name: str
    members: list[SeriesKey]
    spans: list[tuple[int, int]]


def chain_token_series(
    output: Pulled, inputs: Pulled, template: str | None
) -> tuple[
    dict[str, tuple[np.ndarray, np.ndarray]], dict[str, tuple[np.ndarray, np.ndarray]], list[TokenChain]
]:
    """Join token counter series that follow each other in time (a pod replaced mid-period) into one
    chain; series alive at the same time (data-parallel engines, several models, scale-out) stay apart.

    A hand-over must show as a counter reset (the new pod's counters start below where the old one's
    stopped), so that the integrator counts the new pod's tokens from zero as ``increase()`` does.
    """
    where = f"queries {output.query} and {inputs.query}"
    out_keys, in_keys = set(output.series), set(inputs.series)
    if out_keys != in_keys:
        odd = sorted(out_keys ^ in_keys)[0]
        which = inputs.query if odd in out_keys else output.query
        raise SourceError(
            f"instance {_label_text(odd)} has no series for {which} (output and input counters must come in pairs)",
            where,
        )
    order = sorted(out_keys, key=lambda k: (int(output.series[k][0][0]), k))
    chains: list[list[SeriesKey]] = []
    for key in order:
        first = output.series[key][0][0]
        # The chain that ended last before this series began (best fit keeps parallel slots apart).
        open_chains = [c for c in chains if output.series[c[-1]][0][-1] < first]
        if not open_chains:
            chains.append([key])
            continue
        chain = max(open_chains, key=lambda c: output.series[c[-1]][0][-1])
        prev = chain[-1]
        for pulled in (output, inputs):
            if not pulled.series[key][1][0] < pulled.series[prev][1][-1]:
                raise SourceError(
                    f"series {_label_text(key)} follows {_label_text(prev)} (replaced instance?) but its "
                    f"counter starts at {float(pulled.series[key][1][0])!r}, not below the "
                    f"{float(pulled.series[prev][1][-1])!r} where the other stopped: the hand-over would "
                    "read as a continuation and lose tokens; give the instances a name template",
                    f"query {pulled.query}",
                )
        chain.append(key)
    out_named: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    in_named: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    info = []
    for chain in chains:
        base = series_name(template, dict(chain[0]), output.query)
        name, n = base, 1
        while name in out_named:
            n += 1
            name = f"{base}#{n}"
        for pulled, named in ((output, out_named), (inputs, in_named)):
            named[name] = (
                np.concatenate([pulled.series[k][0] for k in chain]),
                np.concatenate([pulled.series[k][1] for k in chain]),
            )
        spans = [(int(output.series[k][0][0]), int(output.series[k][0][-1])) for k in chain]
        info.append(TokenChain(name, chain, spans))
    return dict(sorted(out_named.items())), dict(sorted(in_named.items())), info


def token_union_coverage(chains: list[TokenChain], start_ms: int, end_ms: int) -> float:
    """Share of the period that the deployment's token counters span, all instances together.

    A chain spans from its first to its last sample (its counters bridge the hand-overs); chains
    alive at the same time count once.
    """
    spans = sorted((max(c.spans[0][0], start_ms), min(c.spans[-1][1], end_ms)) for c in chains)
    covered, reach = 0, start_ms
    for a, b in spans:
        a = max(a, reach)
        if b > a:
            covered += b - a
            reach = b
    return covered / (end_ms - start_ms) if end_ms > start_ms else 0.0


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


def _request_table(pulled: Pulled) -> dict[str, np.ndarray]:
    """Every request-counter series as its own instance (named by its full label set): vLLM splits
    the count by finished_reason, and each series is a counter whose increases add up."""
    keys = sorted(pulled.series, key=lambda k: canonical_labels(dict(k)))
    names = [canonical_labels(dict(k)) or "all" for k in keys]
    return {
        "timestamp": np.concatenate([pulled.series[k][0] for k in keys]) / 1000.0,
        "instance": np.repeat(np.array(names), [pulled.series[k][0].size for k in keys]),
        "requests": np.concatenate([pulled.series[k][1] for k in keys]),
    }


def prometheus_source(dep: DeploymentConfig) -> PrometheusSource:
    """The deployment's source, which must be ``kind: prometheus``."""
    src = dep.source
    if not isinstance(src, PrometheusSource):
        raise ConfigError(
            f"deployment {dep.deployment} has a {src.kind} source, not prometheus", "fleet config"
        )
    return src


def build_manifest(
    dep: DeploymentConfig, plan: Plan, start: dt.datetime, end: dt.datetime, where: str
) -> dict[str, Any]:
    """The bundle manifest minus provenance; checked before any request is sent."""
    src = prometheus_source(dep)
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
        "period": {"start": stamp(start), "end": stamp(end)},
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


def _max_gap_ms(max_gap: str | None, default_s: float) -> int:
    if max_gap:
        from greencert.units import Q_

        return round(Q_(max_gap).to("s").magnitude * 1000)
    return round(default_s * 1000)


@dataclass
class PullResult:
    """One deployment's period as pulled: the bundle (manifest + tables) and what ``sources check`` shows."""

    manifest: dict[str, Any]
    tables: dict[str, dict[str, np.ndarray]]
    report: dict[str, Any]


def _retired_hint(puller: Puller, plan: Plan, labels: Mapping[str, str], query: str) -> None:
    """A query found nothing: if the server holds a metric name the profile lists as retired, say so."""
    for metric, why in plan.retired_metrics.items():
        probe = puller.pull(build_selector(Selector(metric=metric), labels), puller.start_ms, required=False)
        if probe.series:
            raise SourceError(f"no samples, but the server has {metric}: {why.strip()}", f"query {query}")


def pull_deployment(
    cfg: FleetConfig,
    dep: DeploymentConfig,
    start: dt.datetime,
    end: dt.datetime,
    hook: PrometheusHook | None = None,
) -> PullResult:
    """Pull one deployment's period from Prometheus, in memory; nothing is written."""
    from greencert.grading import DEFAULT_SCHEME, load_scheme

    src = prometheus_source(dep)
    where = f"fleet config: deployment {dep.deployment}"
    names = [src.profile] if isinstance(src.profile, str) else list(src.profile)
    plan = resolve_plan(names, cfg.source_profiles, where)
    unknown_roles = sorted(set(src.series_labels) - set(plan.roles()) - set(plan.optional_roles()))
    if unknown_roles:
        raise ConfigError(
            f"series_labels for {', '.join(unknown_roles)}, which the profiles do not pull; "
            f"roles: {', '.join(plan.roles() + plan.optional_roles())}",
            where,
        )
    static = dict(src.manifest)
    attribution_cfg = static.pop("attribution", None)
    if attribution_cfg is not None:
        from greencert.compute.attribution import RULES

        if not isinstance(attribution_cfg, dict) or attribution_cfg.get("rule") not in RULES:
            raise ConfigError(
                f"source.manifest.attribution must be {{rule: one of {', '.join(sorted(RULES))}, "
                f"match: {{label: value}}}}, not {attribution_cfg!r}",
                where,
            )
        if set(attribution_cfg) - {"rule", "match"}:
            raise ConfigError("source.manifest.attribution takes only 'rule' and 'match'", where)
    manifest = build_manifest(
        dep.model_copy(update={"source": src.model_copy(update={"manifest": static})}),
        plan,
        start,
        end,
        where,
    )
    scheme_gap = load_scheme(cfg.scheme_path or DEFAULT_SCHEME).max_gap_seconds

    if hook is None:
        from greencert.sources.prometheus_hook import PrometheusHook

        hook = PrometheusHook(src.conn_id)
    build = hook.build_info()  # first request: an unreachable server fails here, before any query
    gaps = [manifest["power"].get("max_gap"), *(m.max_gap for m in plan.meters)]
    if plan.facility is not None:
        gaps += [plan.facility.meter.max_gap, plan.facility.it_meter.max_gap]
    # The grid runs past the end by the largest bridged gap, so each series' first sample after the
    # end is seen (the edge is interpolated, as at the start).
    after_s = max(_max_gap_ms(g, scheme_gap) for g in gaps) / 1000
    puller = Puller(hook, start, end, src.step_seconds, after_s)

    queries: list[dict[str, Any]] = []
    report: dict[str, Any] = {"deployment": dep.deployment, "profiles": plan.profiles, "roles": {}}

    def pull(role: str, sel: Selector, max_gap: str | None, required: bool = True) -> Pulled:
        # Both token counters share the role "tokens" for series_labels.
        labels = {**src.labels, **src.series_labels.get(role.split(".")[0], {})}
        # Keep what validation accepts: nothing older than the start minus the largest bridged gap,
        # nothing later than the first sample after the end (within the same gap).
        gap_ms = _max_gap_ms(max_gap, scheme_gap)
        query = build_selector(sel, labels)
        try:
            pulled = puller.pull(query, puller.start_ms - gap_ms, required, gap_ms)
        except SourceError as exc:
            if "no samples between" in exc.problem:
                _retired_hint(puller, plan, labels, query)
            raise
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

    def devices_of(role: str, pulled: Pulled, template: str | None) -> dict[str, Device]:
        devices = identify(pulled, template)
        rows = device_report(devices)
        report["roles"][role] = {"query": pulled.query, "devices": rows}
        churn = [{"device": r["device"], "stitched": r["stitched"]} for r in rows if "stitched" in r]
        mig = [{"device": r["device"], "instances": r["mig_instances"]} for r in rows if "mig_instances" in r]
        repeated = sum(r.get("repeated_samples_dropped", 0) for r in rows)
        intervals = [r["scrape_interval_seconds"] for r in rows if "scrape_interval_seconds" in r]
        if intervals:
            queries[-1]["scrape_interval_seconds"] = float(np.median(intervals))
        queries[-1]["devices"] = len(devices)
        if churn:
            queries[-1]["stitched"] = churn
        if mig:
            queries[-1]["mig"] = mig
        if repeated:
            queries[-1]["repeated_samples_dropped"] = repeated
        return devices

    power_pulled = pull(ROLE_POWER, plan.power, manifest["power"].get("max_gap"))
    power = devices_of(ROLE_POWER, power_pulled, plan.power.device)
    gpu_count = manifest["scope"].get("gpu_count")
    if (
        gpu_count is not None
        and attribution_cfg is None
        and plan.power.meter_class == "gpu_sensor"
        and len(power) != gpu_count
    ):
        raise SourceError(
            f"scope.gpu_count is {gpu_count} but the power query returned {len(power)} GPU series "
            f"({', '.join(power)}): a missing series would understate the energy",
            f"query {queries[-1]['query']}",
        )
    tables: dict[str, dict[str, np.ndarray]] = {
        "power.parquet": _meter_table({n: (d.t, d.v) for n, d in power.items()})
    }
    if attribution_cfg is not None:
        from greencert.compute.attribution import mig_slice_shares

        by_device = {
            name: {
                "labels": [dict(k) for k in d.members],
                "mig": [
                    {
                        "gpu_instance": m.gpu_instance,
                        "profile": m.profile,
                        "holders": [h["labels"] for h in m.holders],
                    }
                    for m in d.mig.values()
                ],
            }
            for name, d in power.items()
        }
        manifest["attribution"] = mig_slice_shares(by_device, dict(attribution_cfg.get("match") or {}), where)
        report["attribution"] = manifest["attribution"]

    out = pull(f"{ROLE_TOKENS}.output", plan.tokens.output, None)
    inp = pull(f"{ROLE_TOKENS}.input", plan.tokens.input, None)
    out_named, in_named, chains = chain_token_series(out, inp, plan.tokens.instance)
    tokens, dropped = _token_table(out_named, in_named, (out.query, inp.query))
    tables["tokens.parquet"] = tokens
    chain_rows = [
        {
            "instance": c.name,
            "series": [canonical_labels(dict(k)) for k in c.members],
            "from": stamp_ms(c.spans[0][0] / 1000),
            "to": stamp_ms(c.spans[-1][1] / 1000),
        }
        for c in chains
    ]
    union = token_union_coverage(chains, puller.start_ms, puller.end_ms)
    report["roles"][ROLE_TOKENS] = {
        "queries": [out.query, inp.query],
        "instances": chain_rows,
        "union_coverage": union,
    }
    replaced = [r for r in chain_rows if len(r["series"]) > 1]
    if replaced:
        queries[-1]["replaced_instances"] = replaced

    if plan.requests is not None:
        # Optional: without the engine's request counter the certificate has no per-query figures.
        req = pull(ROLE_REQUESTS, plan.requests, None, required=False)
        if req.series:
            tables["requests.parquet"] = _request_table(req)
            manifest["requests"] = {"file": "requests.parquet", "metric": plan.requests.metric}
            report["roles"][ROLE_REQUESTS] = {"query": req.query, "series": len(req.series)}

    absent = set()
    for meter in plan.meters:
        pulled = pull(meter.name, meter, meter.max_gap, meter.required)
        if not pulled.series:
            absent.add(meter.name)  # an optional layer this deployment does not export
            continue
        devices = devices_of(meter.name, pulled, meter.device)
        tables[f"{meter.name}.parquet"] = _meter_table({n: (d.t, d.v) for n, d in devices.items()})
    if "meters" in manifest:
        manifest["meters"] = [m for m in manifest["meters"] if m["name"] not in absent]
        if not manifest["meters"]:
            del manifest["meters"]
    if plan.facility is not None:
        for role, sel, file in (
            (ROLE_FACILITY, plan.facility.meter, "facility_meter.parquet"),
            (ROLE_IT, plan.facility.it_meter, "it_meter.parquet"),
        ):
            devices = devices_of(role, pull(role, sel, sel.max_gap), sel.device)
            tables[file] = _meter_table({n: (d.t, d.v) for n, d in devices.items()})

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
        "repeats dropped, chunks stitched by sample timestamp, the last sample at or before the start "
        "and the first at or after the end kept; series of one physical device stitched in time order",
        "queries": queries,
        "token_rows_dropped_unpaired": dropped,
        "token_union_coverage": round(union, 12),
    }
    if attribution_cfg is not None:
        # Checked again now that the section exists (a share outside [0, 1] would be a bug here).
        try:
            parse_manifest(manifest, f"{where}: pulled manifest")
        except BundleError as exc:
            raise SourceError(f"the pulled bundle manifest is invalid: {exc.problem}", where) from None
    report["server"] = hook.base_url
    report["prometheus_version"] = manifest["provenance"]["prometheus_version"]
    report["step_seconds"] = src.step_seconds
    report["queries"] = queries
    return PullResult(manifest, tables, report)


def extract_prometheus(
    cfg: FleetConfig,
    dep: DeploymentConfig,
    start: dt.datetime,
    end: dt.datetime,
    target: Path,
    hook: PrometheusHook | None = None,
) -> Path:
    """Pull one deployment's period from Prometheus and write its bundle at ``target`` (atomically)."""
    result = pull_deployment(cfg, dep, start, end, hook)
    path = write_bundle(target, result.manifest, result.tables)
    log.info(
        "pulled %s from %s (Prometheus %s): %s -> %s",
        dep.deployment,
        result.manifest["provenance"]["server"],
        result.manifest["provenance"]["prometheus_version"],
        ", ".join(
            f"{q['role']} {q['series']} series / {q['samples']} samples" for q in result.report["queries"]
        ),
        Path(path) / MANIFEST_NAME,
    )
    return path

"""Water (ISO/IEC 30134-9 WUE) and figures per 1,000 queries, scheme 2026.3 (docs/boundary.md).

The bundles are node-metered at a constant 1000 W for one hour with 1,000,000 output tokens, so
IT = 1 kWh and, with the default idle capacity of 10/83 of IT (Google 2025, arXiv 2508.15734)
and the declared PUE 1.2, facility = (1 + 10/83) x 1.2 kWh: every expected value below follows
by hand from these numbers.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.errors import ValidationFailed
from greencert.grading import SCHEME_DIR, load_scheme
from greencert.pipeline import figures_document
from greencert.sources.profiles import builtin_profiles
from integrity_bundles import START, build, times

S3 = SCHEME_DIR / "greencert-2026.3.yaml"
S2 = SCHEME_DIR / "greencert-2026.2.yaml"
IT = 1.0
IDLE = IT * 10 / 83
FACILITY = (IT + IDLE) * 1.2
CARBON = FACILITY * 400.0  # annual grid factor of the test bundles, gCO2e/kWh
NODE = {"meter_class": "node_meter"}
WUE = {"value": 0.3, "source": "site water meter / IT energy 2025 (operator report)", "period": "2025"}
OFFSITE = {"intensity": 2.0, "source": "national average water intensity of electricity (declared)"}


def _requests(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    t = times()
    return {
        "timestamp": np.tile(t, len(counts)),
        "instance": np.repeat(np.array(list(counts)), t.size),
        "requests": np.concatenate(list(counts.values())),
    }


def _bundle(tmp_path, facility=None, requests=None, name="b"):
    extra: dict = {}
    tables: dict = {}
    if requests is not None:
        extra["requests"] = {"file": "requests.csv", "metric": "vllm:request_success_total"}
        tables["requests.csv"] = _requests(requests)
    return build(
        tmp_path / name,
        power=1000.0,
        power_spec=NODE,
        facility={"pue": 1.2, "pue_category": 3, **(facility or {})},
        manifest_extra=extra,
        extra_tables=tables,
    )


def _figures(path, scheme=S3):
    return figures_document(open_bundle(path), load_scheme(scheme), {"suites": [], "rows": {}})


def _linear(total: float, offset: float = 0.0) -> np.ndarray:
    t = times() - START
    return offset + total * t / 3600.0


def test_water_onsite_and_offsite(tmp_path):
    f = _figures(_bundle(tmp_path, {"wue": WUE, "offsite_water": OFFSITE}))
    onsite = 0.3 * (IT + IDLE)  # WUE applies to IT energy, idle provisioned machines included
    offsite = 2.0 * FACILITY  # the electricity's water applies to all the facility draws
    w = f["water"]
    assert w["wue"] == {
        "value": 0.3,
        "unit": "L/kWh",
        "basis": "declared",
        "source": WUE["source"],
        "standard": "ISO/IEC 30134-9",
        "period": "2025",
    }
    assert w["onsite_per_million_tokens"]["value"] == pytest.approx(onsite, rel=1e-10)
    assert w["offsite_included"] is True
    assert w["offsite"]["value"] == pytest.approx(offsite, rel=1e-10)
    assert f["metrics"]["water_per_million_tokens"] == {
        "value": pytest.approx(onsite + offsite, rel=1e-10),
        "unit": "L/Mtok",
    }


def test_water_without_offsite(tmp_path):
    f = _figures(_bundle(tmp_path, {"wue": WUE}))
    assert f["water"]["offsite_included"] is False
    assert "offsite" not in f["water"]
    assert f["metrics"]["water_per_million_tokens"]["value"] == pytest.approx(0.3 * (IT + IDLE), rel=1e-10)


def test_per_query_figures_sum_the_instances(tmp_path):
    # vLLM splits the count by finished_reason: 1500 stopped + 500 cut at max length = 2000 queries.
    counts = {"finished_reason=stop": _linear(1500, 40), "finished_reason=length": _linear(500, 7)}
    f = _figures(_bundle(tmp_path, {"wue": WUE}, counts))
    kq = 2.0
    m = f["metrics"]
    assert m["requests"] == {"value": pytest.approx(2000.0, rel=1e-12), "unit": "query"}
    assert m["energy_per_thousand_queries"] == {
        "value": pytest.approx(FACILITY * 1000 / kq, rel=1e-10),
        "unit": "Wh/kquery",
    }
    assert m["carbon_per_thousand_queries"] == {
        "value": pytest.approx(CARBON / kq, rel=1e-10),
        "unit": "gCO2e/kquery",
    }
    assert m["water_per_thousand_queries"] == {
        "value": pytest.approx(0.3 * (IT + IDLE) / kq, rel=1e-10),
        "unit": "L/kquery",
    }
    pq = f["per_query"]
    assert pq["requests"] == pytest.approx(2000.0)
    assert pq["source"] == "requests.csv (vllm:request_success_total)"
    assert pq["output_tokens_per_query"] == pytest.approx(1_000_000 / 2000, rel=1e-6)


def test_per_query_counts_across_a_counter_reset(tmp_path):
    # 1200 requests in the first half hour, an engine restart, then 800 counted from zero again.
    t = times() - START
    c = np.where(t < 1800, 100 + 1200 * t / 1800, 800 * (t - 1800) / 1800)
    # The sample at the restart shows what the new engine counted since it started (0 at t=1800),
    # so the requests between the last old sample and the restart are those of the old counter's
    # last step: the old counter reached 100 + 1200 * 1785/1800 and the increase() rule loses the rest.
    expected = 1200 * 1785 / 1800 + 800
    f = _figures(_bundle(tmp_path, requests={"engine0": c}))
    assert f["metrics"]["requests"]["value"] == pytest.approx(expected, rel=1e-12)


def test_scheme_2026_2_reports_neither(tmp_path):
    path = _bundle(tmp_path, {"wue": WUE, "offsite_water": OFFSITE}, {"e": _linear(2000)})
    f = _figures(path, S2)
    assert not {"water", "per_query", "boundary"} & set(f)
    plain = _figures(_bundle(tmp_path, name="plain"), S2)
    assert f["metrics"] == plain["metrics"]


def test_requests_validated_like_tokens(tmp_path):
    from greencert.validation import validate_bundle

    scheme = load_scheme(S3)
    ok = open_bundle(_bundle(tmp_path, requests={"e": _linear(2000)}))
    report = validate_bundle(ok, scheme)
    assert "requests_profile" in {s.suite for s in report.suites}
    bad = _linear(2000)
    bad[17] = -1.0
    with pytest.raises(ValidationFailed, match=r"requests\.csv.*negative"):
        validate_bundle(open_bundle(_bundle(tmp_path, requests={"e": bad}, name="neg")), scheme)
    half = np.where(times() - START <= 1500, _linear(2000), np.nan)
    path = _bundle(tmp_path, requests={"e": half}, name="half")
    # Only the first 25 minutes: the rows after them are left out of the file.
    import pandas as pd

    frame = pd.read_csv(path / "requests.csv")
    frame[frame["requests"].notna()].to_csv(path / "requests.csv", index=False)
    with pytest.raises(ValidationFailed, match="requests counters do not span enough"):
        validate_bundle(open_bundle(path), scheme)


def test_builtin_profiles_name_the_engines_request_counters():
    profiles = builtin_profiles()
    assert profiles["vllm"].requests.metric == "vllm:request_success_total"
    assert profiles["sglang"].requests.metric == "sglang:num_requests_total"
    assert profiles["tgi"].requests.metric == "tgi_request_success"


def test_simulated_bundles_have_request_counters(tmp_path):
    from greencert.sources.simulate import profile_by_name, simulate_deployment

    profile = profile_by_name("chat-8b")
    start = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    path = simulate_deployment(profile, start, start + dt.timedelta(hours=6), tmp_path / "sim")
    f = _figures(path)
    # Requests are drawn as Poisson(output tokens of the step / tokens per request): over six hours
    # the ratio is within a few percent of the profile's mean.
    assert f["per_query"]["output_tokens_per_query"] == pytest.approx(
        profile.output_tokens_per_request, rel=0.05
    )
    # The simulated dc-east-1 declares an illustrative WUE, so the sample certificates show water.
    assert f["water"]["wue"]["value"] == 0.3 and f["water"]["offsite_included"] is False
    energy_wh = f["metrics"]["facility_energy"]["value"] * 1000
    assert f["metrics"]["energy_per_thousand_queries"]["value"] == pytest.approx(
        energy_wh / (f["metrics"]["requests"]["value"] / 1000), rel=1e-9
    )


# --- the Prometheus pull of the request counters, against an in-memory server ----------------------
LOOKBACK_MS = 300_000


class _Server:
    """Answers /api/v1/query_range like Prometheus: at each step the latest sample within 5 min."""

    base_url = "http://prometheus.test"

    def __init__(self, series: list[tuple[str, dict[str, str], np.ndarray, np.ndarray]]):
        self.series = series

    def build_info(self) -> dict[str, str]:
        return {"version": "3.0.0-test", "revision": "test"}

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        stamp = query.startswith("timestamp(")
        name = (query[len("timestamp(") : -1] if stamp else query).split("{")[0]
        first, last, step_ms = round(start * 1000), round(end * 1000), round(step * 1000)
        out = []
        for metric, labels, t, v in self.series:
            if metric != name:
                continue
            values, times = [], []
            for e in range(first, last + 1, step_ms):
                i = np.searchsorted(t, e, side="right") - 1
                if i >= 0 and t[i] >= e - LOOKBACK_MS:
                    values.append([e / 1000, repr(float(v[i]))])
                    times.append([e / 1000, repr(int(t[i]) / 1000)])
            if values:
                out.append(
                    {
                        "metric": labels if stamp else {"__name__": metric, **labels},
                        "values": times if stamp else values,
                    }
                )
        return out


@pytest.mark.parametrize("exported", [True, False])
def test_prometheus_pull_writes_the_request_counters(tmp_path, exported):
    import yaml

    from greencert.config import load_config
    from greencert.sources.prometheus import pull_deployment

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    t = (start.timestamp() + np.arange(0, 3600 + 15, 15.0)) * 1000
    t = t.astype(np.int64)
    rel = (t - t[0]) / 3.6e6  # hours since the start
    gpu = {"Hostname": "node0", "gpu": "0", "cluster": "main"}
    eng = {"model_name": "m", "cluster": "main", "instance": "vllm-0"}
    series = [
        ("DCGM_FI_DEV_POWER_USAGE", gpu, t, np.full(t.size, 500.0)),
        ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", gpu, t, 1e9 + 500.0 * 1000 * (t - t[0]) / 1000),
        ("vllm:generation_tokens_total", eng, t, 1e6 * rel),
        ("vllm:prompt_tokens_total", eng, t, 3e6 * rel),
        ("vllm:request_success_total", {**eng, "finished_reason": "stop"}, t, 100 + 1500 * rel),
        ("vllm:request_success_total", {**eng, "finished_reason": "length"}, t, 500 * rel),
    ]
    # An engine without the counter: the pull goes on, the bundle has no per-query figures.
    server = _Server(series if exported else [s for s in series if s[0] != "vllm:request_success_total"])
    source = {
        "kind": "prometheus",
        "profile": ["dcgm", "vllm"],
        "labels": {"cluster": "main"},
        "step_seconds": 15,
        "manifest": {
            "scope": {
                "site": "dc-test-1",
                "model": "m",
                "hardware": "1x NVIDIA H100",
                "active_params_billions": 8,
            },
            "facility": {"pue": 1.2},
            "grid": {"annual": 400, "unit": "gCO2e/kWh", "source": "test factor"},
        },
    }
    config = tmp_path / "fleet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registry": "registry",
                "work_dir": "work",
                "deployments": [{"deployment": "d", "source": source}],
            }
        )
    )
    cfg = load_config(config)
    result = pull_deployment(cfg, cfg.deployment("d"), start, start + dt.timedelta(hours=1), server)
    if not exported:
        assert "requests" not in result.manifest and "requests.parquet" not in result.tables
        return
    assert result.manifest["requests"] == {"file": "requests.parquet", "metric": "vllm:request_success_total"}
    table = result.tables["requests.parquet"]
    assert sorted(set(table["instance"])) == sorted(
        [
            "cluster=main,finished_reason=length,instance=vllm-0,model_name=m",
            "cluster=main,finished_reason=stop,instance=vllm-0,model_name=m",
        ]
    )
    from greencert.bundle.writer import write_bundle

    path = write_bundle(tmp_path / "bundle", result.manifest, result.tables)
    f = _figures(path)
    assert f["metrics"]["requests"]["value"] == pytest.approx(2000.0, rel=1e-9)


def test_certificate_carries_the_sections_and_verifies(tmp_path):
    import json

    import jsonschema

    from conftest import REPO
    from greencert.certificate.verify import TrustOptions, verify_certificate
    from greencert.pipeline import certify

    path = _bundle(tmp_path, {"wue": WUE, "offsite_water": OFFSITE}, {"e": _linear(2000)})
    cert_path = certify(path, tmp_path / "registry", scheme_path=S3)
    cert = json.loads(open(cert_path).read())
    schema = json.loads((REPO / "plugins" / "greencert" / "schemas" / "certificate.schema.json").read_text())
    jsonschema.validate(cert, schema, cls=jsonschema.Draft202012Validator)
    assert cert["scheme"]["version"] == "2026.3"
    assert {"boundary", "water", "per_query"} <= set(cert)
    assert (
        cert["boundary"]["total_per_million_tokens"]["value"]
        == cert["metrics"]["energy_per_million_tokens"]["value"]
    )
    assert cert["metrics"]["energy_per_million_tokens"]["value"] == pytest.approx(FACILITY, rel=1e-10)
    assert cert["metrics"]["energy_per_thousand_queries"]["value"] == pytest.approx(FACILITY * 500, rel=1e-10)
    assert "requests.csv" in {i["file"] for i in cert["inputs"]}
    # Verification recomputes every figure from the published evidence (requests.csv included).
    result = verify_certificate(
        Path(cert_path),
        at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        options=TrustOptions(allow_development_key=True, offline=True),
    )
    assert result.development_key


def _typed_bundle(tmp_path, cached, reasoning, name="typed"):
    path = _bundle(tmp_path, name=name)
    import pandas as pd

    frame = pd.read_csv(path / "tokens.csv")
    if cached is not None:
        frame["cached_input_tokens"] = cached
    if reasoning is not None:
        frame["reasoning_output_tokens"] = reasoning
    frame.to_csv(path / "tokens.csv", index=False)
    return path


def test_token_types_follow_opentelemetry_names(tmp_path):
    # Of the 3,000,000 input tokens 1,200,000 came from the prefix cache; of the 1,000,000 output
    # tokens 250,000 were reasoning tokens.
    f = _figures(_typed_bundle(tmp_path, _linear(1_200_000, 5), _linear(250_000, 9)))
    by = f["load_regime"]["tokens"]["by_type"]
    assert by["input"] == {"tokens": pytest.approx(3_000_000), "otel": "gen_ai.usage.input_tokens"}
    assert by["output"] == {"tokens": pytest.approx(1_000_000), "otel": "gen_ai.usage.output_tokens"}
    assert by["cached_input"]["otel"] == "gen_ai.usage.cache_read.input_tokens"
    assert by["cached_input"]["tokens"] == pytest.approx(1_200_000, rel=1e-12)
    assert by["cached_input"]["share_of_input"] == pytest.approx(0.4, rel=1e-6)
    assert by["reasoning_output"]["otel"] == "gen_ai.usage.reasoning.output_tokens"
    assert by["reasoning_output"]["share_of_output"] == pytest.approx(0.25, rel=1e-6)
    # Reported, never graded: the graded figure is unchanged by the extra columns.
    plain = _figures(_bundle(tmp_path, name="plain"))
    assert f["metrics"]["energy_per_million_tokens"] == plain["metrics"]["energy_per_million_tokens"]
    assert "by_type" not in plain["load_regime"]["tokens"]
    assert (
        "by_type"
        not in _figures(_typed_bundle(tmp_path, _linear(1, 0), None, "old"), S2)["load_regime"]["tokens"]
    )


def test_bad_token_type_value_names_file_line_and_column(tmp_path):
    from greencert.errors import BundleError

    bad = _linear(1000)
    bad[4] = -3.0
    with pytest.raises(BundleError, match=r"tokens\.csv line 6 column cached_input_tokens"):
        open_bundle(_typed_bundle(tmp_path, bad, None))

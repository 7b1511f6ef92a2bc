"""A change of serving engine inside the period: one certificate per segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from greencert.bundle import open_bundle
from greencert.bundle.manifest import load_manifest
from greencert.errors import BundleError, ValidationFailed
from greencert.grading import load_scheme
from greencert.pipeline import figures_document
from greencert.segments import certify_bundle, split_bundle
from integrity_bundles import START, build, times

SEGMENTS = [
    {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"},
    {
        "start": "2026-01-01T01:00:00Z",
        "end": "2026-01-01T02:00:00Z",
        "scope": {"engine_version": "0.11.1"},
        "reason": "vLLM upgrade",
    },
]


def _bundle(tmp_path: Path, segments=SEGMENTS) -> Path:
    # 500 W in the first hour, 300 W in the second; 1 M output tokens per hour.
    return build(
        tmp_path / "b",
        hours=2,
        power=lambda t: np.where(t <= 3600, 500.0, 300.0),
        power_spec={"meter_class": "pdu"},
        scope={"serving_engine": "vllm", "engine_version": "0.5.4"},
        manifest_extra={"segments": segments},
    )


def test_each_segment_gets_its_own_certificate(tmp_path: Path) -> None:
    paths = certify_bundle(_bundle(tmp_path), tmp_path / "out", pdf=False)
    certs = [json.loads(Path(p).read_text()) for p in paths]
    assert [c["certificate_id"] for c in certs] == [
        "dc-test-1.integrity-8b.20260101T0000Z-20260101T0100Z",
        "dc-test-1.integrity-8b.20260101T0100Z-20260101T0200Z",
    ]
    assert [c["scope"]["engine_version"] for c in certs] == ["0.5.4", "0.11.1"]
    # Hour 1: 500 W; hour 2: 300 W except the ramp 3600-3615 s, which lies in hour 2 (mean 400 W,
    # so 100 W more than 300 W for 15 s).
    assert certs[0]["metrics"]["it_energy"]["value"] == pytest.approx(0.5)
    assert certs[1]["metrics"]["it_energy"]["value"] == pytest.approx((300 * 3600 + 100 * 15) / 3.6e6)
    for c in certs:
        assert c["metrics"]["output_tokens"]["value"] == pytest.approx(1e6)
        assert len(c["metrics"]["energy_per_million_tokens"]["interval95"]) == 2
    segment = certs[1]["load_regime"]["segment"]
    assert segment["index"] == 2 and segment["of"] == 2 and segment["reason"] == "vLLM upgrade"
    assert segment["changed_from_previous"] == {"engine_version": ["0.5.4", "0.11.1"]}
    # Each certificate's evidence is its own segment bundle.
    ev = Path(paths[0]).parent / f"{certs[0]['certificate_id']}.evidence"
    assert load_manifest(ev).period.end.isoformat() == "2026-01-01T01:00:00+00:00"


def test_segment_files_keep_only_the_rows_validation_accepts(tmp_path: Path) -> None:
    first, second = split_bundle(_bundle(tmp_path), tmp_path / "split", 120.0)
    b = open_bundle(first)
    # Readings up to max_gap (120 s) beyond the segment end are kept for the edge interpolation.
    assert b.power.whole.t.min() == START and b.power.whole.t.max() == START + 3600 + 120
    assert not load_manifest(first).segments
    assert open_bundle(second).power.whole.t.min() == START + 3600 - 120


def test_the_whole_bundle_is_not_certified_across_a_change(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="2 segments"):
        figures_document(open_bundle(_bundle(tmp_path)), load_scheme(), {"suites": [], "rows": {}})


@pytest.mark.parametrize(
    ("segments", "message"),
    [
        (
            [SEGMENTS[0], {**SEGMENTS[1], "start": "2026-01-01T01:10:00Z"}],
            "segments[1].start 2026-01-01T01:10:00+00:00 should be 2026-01-01T01:00:00+00:00",
        ),
        ([{**SEGMENTS[0], "end": "2026-01-01T00:59:30Z"}, SEGMENTS[1]], "is not on a whole minute"),
        ([SEGMENTS[0]], "at least two"),
        ([SEGMENTS[0], {**SEGMENTS[1], "end": "2026-01-01T01:30:00Z"}], "not at period.end"),
    ],
)
def test_segments_must_tile_the_period(tmp_path: Path, segments, message: str) -> None:
    with pytest.raises(BundleError) as err:
        _bundle(tmp_path, segments)
    assert message in err.value.problem


def test_a_request_counter_is_cut_with_its_segment(tmp_path: Path) -> None:
    # 2 hours, 1,000 requests per hour counted steadily: each segment certifies 1,000 requests.
    t = times(hours=2)
    bundle = build(
        tmp_path / "b",
        hours=2,
        power=lambda t: np.where(t <= 3600, 500.0, 300.0),
        power_spec={"meter_class": "pdu"},
        scope={"serving_engine": "vllm", "engine_version": "0.5.4"},
        manifest_extra={"segments": SEGMENTS, "requests": {"file": "requests.csv"}},
        extra_tables={"requests.csv": {"timestamp": t, "requests": (t - t[0]) / 3600.0 * 1000.0}},
    )
    paths = certify_bundle(bundle, tmp_path / "out", pdf=False)
    certs = [json.loads(Path(p).read_text()) for p in paths]
    assert [c["metrics"]["requests"]["value"] for c in certs] == [pytest.approx(1000.0), pytest.approx(1000.0)]

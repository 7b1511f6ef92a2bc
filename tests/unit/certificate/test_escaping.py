"""Data never changes the structure of a page: a property over arbitrary text in every free-text field.

The manifest refuses markup in labels, but the pages must not rely on that: here the text is put
straight into the graded figures (past every input check), published, and rendered as the label,
the registry index page and the Airflow certificates page. Each page is parsed; its sequence of
tags and attribute names must equal that of the same page rendered with plain text, and the hostile
text must come back, character for character, as text content.
"""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_golden_bundle

FIELDS = ("model", "hardware", "gpu_type", "serving_engine", "engine_version", "precision")
NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


class Structure(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, tuple[str, ...]]] = []
        self.text: list[str] = []
        self.attr_values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, tuple(sorted(name for name, _ in attrs))))
        self.attr_values += [v for _, v in attrs if v]

    def handle_endtag(self, tag: str) -> None:
        self.tags.append((f"/{tag}", ()))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Structure:
    s = Structure()
    s.feed(html)
    s.close()
    return s


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from greencert.pipeline import compute_stage, grade_stage, validate_stage

    root = tmp_path_factory.mktemp("escape")
    bundle = write_golden_bundle(root / "bundle")
    work = root / "work"
    work.mkdir()
    validation = validate_stage(bundle, work)
    graded = json.loads(Path(grade_stage(compute_stage(bundle, validation, work), work)).read_text())
    key = root / "issuer.key"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return {"graded": graded, "bundle": bundle, "validation": Path(validation).read_bytes(), "key": key}


def pages(inputs: dict, text: str, registry: Path) -> dict[str, str]:
    """Publish with ``text`` in every free-text field; return label, index page and certificates page."""
    from greencert.certificate.issue import publish_certificate
    from greencert.webui import load_rows, render_page, select_rows

    graded = json.loads(json.dumps(inputs["graded"]))
    for name in FIELDS:
        graded["scope"][name] = text
    graded["methodology"]["grid_source"] = text
    cert = Path(
        publish_certificate(graded, inputs["bundle"], inputs["validation"], registry, inputs["key"], False)
    )
    rows, source = load_rows(registry, NOW)
    total, page = select_rows(rows, limit=50)
    data = {
        "registry": str(registry),
        "source": source,
        "total": total,
        "offset": 0,
        "limit": 50,
        "filters": {"site": None, "deployment": None, "status": None},
        "sites": sorted({r["site"] for r in rows}),
        "deployments": sorted({r["deployment"] for r in rows}),
        "certificates": [{**r, "issued_by": None, "links": {}} for r in page],
    }
    return {
        "label": cert.with_suffix(".html").read_text(),
        "index": (registry / "index.html").read_text(),
        "certificates page": render_page(data, "/greencert"),
    }


HOSTILE = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\r"),
    min_size=1,
    max_size=40,
).map(lambda s: f'{s}<script>alert("x")</script><img src=x onerror=alert(1)>"\'&amp;')


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=HOSTILE)
def test_arbitrary_text_never_changes_page_structure(
    graded: dict, text: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    plain = pages(graded, "plain text", tmp_path_factory.mktemp("plain"))
    hostile = pages(graded, text, tmp_path_factory.mktemp("hostile"))
    for name in plain:
        a, b = parse(plain[name]), parse(hostile[name])
        assert a.tags == b.tags, name  # no element or attribute came from the data
        shown = "".join(b.text) + "\n".join(b.attr_values)
        assert text in shown or text.strip() in shown, name  # and the text is shown as text
        # (The pages have scripts of their own; the data's never appear as markup.)
        assert "<script>alert(" not in hostile[name] and "<img src=x" not in hostile[name]

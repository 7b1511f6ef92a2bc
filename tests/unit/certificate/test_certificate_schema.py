"""Published certificates conform to the JSON Schema shipped in the repo."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, write_golden_bundle
from greencert.pipeline import certify

SCHEMA = json.loads((REPO / "plugins" / "greencert" / "schemas" / "certificate.schema.json").read_text())


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_certificate_conforms(tmp_path: Path) -> None:
    cert = json.loads(Path(certify(write_golden_bundle(tmp_path / "b"), tmp_path / "out")).read_text())
    jsonschema.validate(cert, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_schema_rejects_a_certificate_with_a_wrong_unit(tmp_path: Path) -> None:
    cert = json.loads(Path(certify(write_golden_bundle(tmp_path / "b"), tmp_path / "out")).read_text())
    cert["metrics"]["energy_per_million_tokens"]["unit"] = "Wh/Mtok"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cert, SCHEMA, cls=jsonschema.Draft202012Validator)

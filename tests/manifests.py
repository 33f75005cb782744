"""A manifest.json checked against the published schema file, docs/manifest.schema.json."""

import json
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


def validated(manifest: dict) -> dict:
    """`manifest`, after jsonschema found it valid (raises ValidationError naming the field otherwise)."""
    Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(manifest)
    return manifest

"""Upstream CRD schemas (tests/data) as JSON-schema validators: what the API server checks of a custom resource's
OpenAPI schema (types, required, enums, bounds, patterns), as strict as `kubectl --validate=strict` about unknown
fields. CEL rules (`x-kubernetes-validations`) and the operators' admission webhooks are not evaluated here."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import jsonschema
import yaml

DATA = Path(__file__).parents[1] / "data"


def _strict(schema):
    """Reject unknown fields where the CRD's structural schema would prune them (what a typo silently loses)."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
            schema["additionalProperties"] = False
        for value in schema.values():
            _strict(value)
    elif isinstance(schema, list):
        for value in schema:
            _strict(value)
    return schema


def crd_validator(path: Path, version: str) -> jsonschema.Draft7Validator:
    """The validator of one served version of the CRD in `path` (gzipped YAML, as vendored under tests/data)."""
    with gzip.open(path) as f:
        crd = yaml.safe_load(f)
    served = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the API server's, not the CRD's
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: jsonschema.Draft7Validator, doc: dict) -> list[str]:
    """Each error as `path: message`, the path in the API's dotted form (spec.runtimeRef)."""
    return [f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]

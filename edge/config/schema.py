"""The JSON Schema of a configuration file, from the settings models.

Editors (the YAML language server's ``# yaml-language-server: $schema=``) and CI
validate a file against it before a gateway ever reads it; ``edge config schema``
prints it and docs/edge.schema.json is the same text, committed. The models stay
the one place each key is declared: the schema says the shape and the bounds,
while the rules across keys (``share_control_origin``...) are left to
``edge config check``, which gives the exact line for each.
"""

from __future__ import annotations

import json
from typing import Any

from edge.config.models import Settings

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_TITLE = "Edge gateway configuration"
SCHEMA_DESCRIPTION = (
    "The YAML file `edge serve -c FILE` reads; every key is optional. "
    "Each key, its default and its environment variable: docs/configuration.md. "
    "`edge config check -c FILE` also checks the rules across keys."
)


def _canonical(node: Any) -> Any:
    """The same schema in one spelling, whichever pydantic release wrote it.

    Older pydantic releases wrap a reference that has siblings in a one-item
    ``allOf`` and write whole-number bounds as floats (``300.0``); both mean
    the same in 2020-12, and one spelling keeps the committed file stable.
    """
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    if isinstance(node, float) and node.is_integer():
        return int(node)
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "allOf" and isinstance(value, list) and len(value) == 1:
            only = value[0]
            if isinstance(only, dict) and set(only) == {"$ref"} and "$ref" not in node:
                out["$ref"] = only["$ref"]
                continue
        out[key] = _canonical(value)
    return out


def config_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a file, with ``$schema``, title and description."""
    schema = _canonical(Settings.model_json_schema(mode="validation"))
    schema["properties"].pop("source", None)  # where the settings were read from, not a key
    return {
        "$schema": SCHEMA_DIALECT,
        "title": SCHEMA_TITLE,
        "description": SCHEMA_DESCRIPTION,
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def config_schema_text() -> str:
    """The schema as ``edge config schema`` prints it and docs/edge.schema.json holds it."""
    return json.dumps(config_schema(), indent=2, sort_keys=False) + "\n"


__all__ = ["SCHEMA_DIALECT", "SCHEMA_TITLE", "config_schema", "config_schema_text"]

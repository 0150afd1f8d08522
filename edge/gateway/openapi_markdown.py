"""``docs/api.md``, rendered from the OpenAPI document so the page cannot drift from it."""

from __future__ import annotations

from typing import Any

from edge.gateway.openapi_schemas import ACCESS_LABELS, OPENAPI_PATH, Schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(METHOD, path, operation)`` for every operation, in the document's order."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            found.append((method.upper(), path, operation))
    return found


def _shape(response: dict[str, Any]) -> str:
    """`` (`Name`)`` for a JSON answer whose schema is a named component, else nothing."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return "" if name == "Error" else f" ([`{name}`](#{name.lower()}))"
    if schema.get("type") == "array" and "$ref" in schema.get("items", {}):
        name = schema["items"]["$ref"].rsplit("/", 1)[1]
        return f" (array of [`{name}`](#{name.lower()}))"
    return ""


def render_markdown(document: dict[str, Any]) -> str:
    """``docs/api.md``: one table row per operation, then each operation's answers."""
    lines = [
        "# REST API reference",
        "",
        "<!-- Rendered from edge/gateway/openapi.py by `python -m edge.gateway.openapi`; "
        "do not edit. -->",
        "",
        f"Edge serves this reference as an OpenAPI 3.1 document at `GET {OPENAPI_PATH}` "
        "(public: it holds no secret). Keys are camelCase and times epoch milliseconds. "
        "Every GET also answers HEAD. A local client (this machine, by the `local` rule of "
        "[configuration](configuration.md)) needs no credential; elsewhere a paired device "
        "sends `Authorization: Bearer <device token>` or the dashboard's session cookie. "
        "A write the cookie authenticates must come from the gateway's own origin with "
        "`Content-Type: application/json`. The control WebSocket `/ws` (the dashboard's "
        "and `edge pair`'s connection) is not an HTTP operation and is not listed.",
        "",
        'Every error body has one shape, `{"error", "reason", "detail"}`; '
        "[troubleshooting](troubleshooting.md) explains each `reason`. The metrics row "
        "is served at `metrics.path` (`/metrics` by default) only while metrics are on the "
        "gateway's port. The JSON shapes named in brackets are the `components.schemas` of "
        "the document.",
        "",
        "| Method | Path | Auth | Summary |",
        "|---|---|---|---|",
    ]
    ops = operations(document)
    for method, path, op in ops:
        access = ACCESS_LABELS[op["x-edge-access"]]
        lines.append(f"| {method} | `{path}` | {access} | {op['summary']} |")
    for method, path, op in ops:
        lines += ["", f"## {method} `{path}`", "", op["summary"] + "."]
        if "description" in op:
            lines += ["", op["description"]]
        if "requestBody" in op:
            name = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = name.rsplit("/", 1)[1]
            lines += [
                "",
                f"Body (JSON, optional keys may be left out): [`{name}`](#{name.lower()}).",
            ]
        lines += [""]
        for status, response in sorted(op["responses"].items()):
            shape = _shape(response)
            lines.append(f"- **{status}**: {response['description']}{shape}")
    lines += ["", "# Shapes"]
    for name, schema in document["components"]["schemas"].items():
        lines += ["", f"## {name}", ""]
        if "description" in schema:
            lines += [schema["description"], ""]
        lines += ["| Key | Type | Required |", "|---|---|---|"]
        required = set(schema.get("required", ()))
        for key, prop in schema.get("properties", {}).items():
            yes = "yes" if key in required else "no"
            lines.append(f"| `{key}` | {_type_text(prop)} | {yes} |")
    return "\n".join(lines) + "\n"


def _type_text(schema: Schema) -> str:
    """A property's type in a few words: ``string or null``, ``array of Device``, an enum."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[`{name}`](#{name.lower()})"
    if "oneOf" in schema:
        return " or ".join(_type_text(option) for option in schema["oneOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else str(kind)
    if kind == "array":
        text = f"array of {_type_text(schema.get('items', {}))}"
    if kind == "object" and "properties" in schema:
        text = "object: " + ", ".join(f"`{key}`" for key in schema["properties"])
    return text

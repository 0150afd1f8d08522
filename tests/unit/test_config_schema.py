"""``edge config schema``: the JSON Schema that editors and CI validate a configuration against.

It must be a valid 2020-12 schema, accept every configuration the project ships
(deploy/, config/, the default, and every example in the docs the loader
accepts), refuse what the loader refuses by shape (an unknown key, a wrong
type, a value out of bounds), and be what docs/edge.schema.json holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from edge.cli import cli
from edge.config import ConfigError, load_settings, parse_yaml
from edge.config.schema import SCHEMA_DIALECT, SCHEMA_TITLE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "edge.schema.json"
SHIPPED = sorted([*ROOT.glob("deploy/**/edge*.yaml"), ROOT / "config" / "edge.yaml"], key=str)
DOC_PAGES = (ROOT / "docs" / "configuration.md", ROOT / "docs" / "troubleshooting.md")


def printed_schema(*args: str) -> str:
    result = CliRunner().invoke(cli, ["config", "schema", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(printed_schema())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def test_the_schema_names_its_dialect_and_describes_the_sections() -> None:
    schema = json.loads(printed_schema())
    assert schema["$schema"] == SCHEMA_DIALECT
    assert schema["title"] and schema["description"]
    assert schema["additionalProperties"] is False
    assert "source" not in schema["properties"]
    for name, section in schema["$defs"].items():
        assert section.get("description"), f"{name} has no description"


def test_the_committed_schema_is_what_the_command_prints() -> None:
    printed = printed_schema()
    document = json.loads(printed_schema("--json"))
    assert document == {"dialect": SCHEMA_DIALECT, "title": SCHEMA_TITLE, "schema": printed}
    assert SCHEMA_FILE.read_text(encoding="utf-8") == printed, (
        "docs/edge.schema.json is stale: run `edge config schema > docs/edge.schema.json`"
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configurations_validate(
    validator: jsonschema.Draft202012Validator, path: Path
) -> None:
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    assert _errors(validator, dict(data)) == []


def test_the_default_configuration_validates(validator: jsonschema.Draft202012Validator) -> None:
    assert _errors(validator, {}) == []
    effective = load_settings(None, environ={}).model_dump(mode="json")
    assert _errors(validator, effective) == []


def _doc_configs() -> list[tuple[str, dict[str, Any]]]:
    """Every YAML block of the configuration pages that the loader accepts."""
    found = []
    for page in DOC_PAGES:
        text = page.read_text(encoding="utf-8")
        for index, block in enumerate(text.split("```yaml\n")[1:]):
            body = block.split("```", 1)[0]
            try:
                data = dict(parse_yaml(body, page.name))
                load_settings(data, environ={})
            except ConfigError:
                continue
            found.append((f"{page.name}#{index}", data))
    return found


DOC_CONFIGS = _doc_configs()


def test_the_docs_have_configurations_to_check() -> None:
    assert len(DOC_CONFIGS) >= 5


@pytest.mark.parametrize(("name", "data"), DOC_CONFIGS, ids=[n for n, _ in DOC_CONFIGS])
def test_documented_configurations_validate(
    validator: jsonschema.Draft202012Validator, name: str, data: dict[str, Any]
) -> None:
    assert _errors(validator, data) == [], name


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("server:\n  prot: 8080\n", "server: Additional properties are not allowed"),
        ("servre:\n  port: 8080\n", ": Additional properties are not allowed"),
        ("server:\n  port: 70000\n", "server.port: 70000 is greater than the maximum"),
        ("server:\n  port: eighty\n", "server.port: 'eighty' is not of type 'integer'"),
        ("proxy:\n  trusted_proxies: 127.0.0.1\n", "proxy.trusted_proxies: '127.0.0.1' is not"),
        ("logging:\n  level: loud\n", "logging.level: 'loud' is not one of"),
        ("upstreams:\n  - host: a.example.com\n", "upstreams.0: 'url' is a required property"),
        ("auth:\n  rate_limit:\n    ipv6_prefix: 8\n", "auth.rate_limit.ipv6_prefix: 8 is less"),
        ("pairing:\n  device_idle_expiry: soon\n", "pairing.device_idle_expiry: 'soon' is not"),
    ],
)
def test_invalid_configurations_fail(
    validator: jsonschema.Draft202012Validator, text: str, where: str
) -> None:
    data = yaml.safe_load(text)
    with pytest.raises(ConfigError):
        load_settings(data, environ={})
    errors = _errors(validator, data)
    assert any(e.startswith(where) for e in errors), errors

"""The operator docs say what the code does.

docs/configuration.md must list every key of ``Settings`` with its real
default; docs/troubleshooting.md must have an entry with a fix for every
refusal, HTTP denial body, close code and ``edge doctor`` check. Every
``edge config check -c edge.yaml`` and ``edge explain`` example is run again
(with the nearest YAML block above it as ``edge.yaml``) and must print exactly
what the page shows, and every relative link in README.md and docs/ must lead
to a file. A changed message, default or rule therefore fails here instead of
misleading an operator.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from edge.cli import cli
from edge.cli.pair import PAIR_DIR_ENV
from edge.config import CONFIG_ENV, TOKEN_ENV, ConfigError, Settings, load_settings, parse_yaml
from edge.gateway.context import AuthState
from edge.gateway.guard import denial_response
from edge.refusals import Denial, ui_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
TROUBLESHOOTING = DOCS / "troubleshooting.md"
INDEX = DOCS / "README.md"
OWN_PAGES = (CONFIGURATION, TROUBLESHOOTING, INDEX)
LINKED_PAGES = (ROOT / "README.md", *sorted(DOCS.rglob("*.md")))
APP_JS = ROOT / "edge" / "ui" / "app.js"
DOCTOR_SOURCE = ROOT / "edge" / "cli" / "doctor.py"

# Refusals of HTTP requests only; every other Denial can close a control socket.
HTTP_ONLY = frozenset(
    {
        Denial.CREDENTIALS_MISSING,
        Denial.ROLE_FORBIDDEN,
        Denial.CROSS_SITE_WRITE,
        Denial.METRICS_TOKEN_MISMATCH,
    }
)
# What ``authenticate_http`` can reject a presented credential with.
HTTP_CREDENTIAL_DENIALS = (Denial.DEVICE_TOKEN_INVALID, Denial.DEVICE_REVOKED, Denial.RATE_LIMITED)
CLOSE_CODES = (1009, 1012, 1006)
CHECKED_COMMANDS = (("edge", "config", "check"), ("edge", "explain"))
CLEAN_ENV = {CONFIG_ENV: None, TOKEN_ENV: None}


# -- reading markdown ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block: its info string, text and first line number."""

    lang: str
    text: str
    line: int


@dataclass(frozen=True)
class Section:
    """A heading and everything up to the next heading of the same or a higher level."""

    level: int
    heading: str
    body: str


_FENCE = re.compile(r"^```(\S*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_INLINE_CODE = re.compile(r"`[^`]*`")


def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def blocks(text: str) -> list[Block]:
    found: list[Block] = []
    lang: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line)
        if lang is None and fence:
            lang, start, lines = fence.group(1), number, []
        elif lang is not None and line.strip() == "```":
            found.append(Block(lang, "\n".join(lines), start))
            lang = None
        elif lang is not None:
            lines.append(line)
    return found


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    kept: list[str] = []
    inside = False
    for line in text.splitlines():
        if _FENCE.match(line) or (inside and line.strip() == "```"):
            inside = not inside
            continue
        if not inside:
            kept.append(line)
    return kept


def sections(text: str) -> list[Section]:
    headings: list[tuple[int, int, str]] = []
    lines = text.splitlines()
    inside = False
    for index, line in enumerate(lines):
        if line.startswith("```"):
            inside = not inside
        match = _HEADING.match(line)
        if match and not inside:
            headings.append((index, len(match.group(1)), match.group(2)))
    found = []
    for position, (index, level, heading) in enumerate(headings):
        end = len(lines)
        for later_index, later_level, _ in headings[position + 1 :]:
            if later_level <= level:
                end = later_index
                break
        found.append(Section(level, heading, "\n".join(lines[index + 1 : end])))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def has_fix(section: Section) -> bool:
    return any(line.startswith("**Fix**") for line in section.body.splitlines())


def sections_naming(page: Path, *values: str) -> list[Section]:
    """Sections whose heading names every value in backticks."""
    return [s for s in sections(read(page)) if all(f"`{v}`" in s.heading for v in values)]


# -- configuration keys -------------------------------------------------------------------------


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model inside an annotation, and whether it is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and args:
        inner, _ = _model_of(args[0])
        return inner, inner is not None
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            inner, is_list = _model_of(arg)
            if inner is not None:
                return inner, is_list
    return None, False


def settings_leaves(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, Any]:
    """Every leaf key as written in the docs (``upstreams[].prefix``) and its field."""
    leaves: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = f"{prefix}{name}"
        inner, is_list = _model_of(field.annotation)
        if inner is None:
            leaves[key] = field
        else:
            leaves.update(settings_leaves(inner, f"{key}[]." if is_list else f"{key}."))
    return leaves


def key_table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the tables headed ``| Key | Type | Default | ...``: key -> cells."""
    rows: dict[str, list[str]] = {}
    in_key_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_key_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[:3] == ["Key", "Type", "Default"]:
            in_key_table = True
            continue
        if in_key_table and not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = cells
    return rows


def _expected_default(field: Any) -> Any:
    default = field.get_default(call_default_factory=True)
    return str(default) if isinstance(default, Path) else default


def _documented_default(cell: str) -> Any:
    if cell == "required":
        return "required"
    value = yaml.safe_load(cell.strip("`"))
    return str(Path(value)) if isinstance(value, str) and value.startswith("./") else value


LEAVES = settings_leaves()


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_settings_key_has_a_row_with_its_real_default(key: str) -> None:
    rows = key_table_rows(read(CONFIGURATION))
    assert key in rows, f"docs/configuration.md has no table row for `{key}`"
    field = LEAVES[key]
    expected = "required" if field.is_required() else _expected_default(field)
    assert _documented_default(rows[key][2]) == expected, f"default of `{key}`"


def test_no_documented_key_is_unknown_to_the_settings() -> None:
    stale = sorted(set(key_table_rows(read(CONFIGURATION))) - set(LEAVES))
    assert stale == [], f"keys documented but not in Settings: {stale}"


@pytest.mark.parametrize("variable", [CONFIG_ENV, TOKEN_ENV, PAIR_DIR_ENV])
def test_environment_variables_are_documented(variable: str) -> None:
    rows = [line for line in read(CONFIGURATION).splitlines() if line.startswith(f"| `{variable}`")]
    assert rows, f"docs/configuration.md has no row for `{variable}`"


def _yaml_followed_by(page: Path) -> list[tuple[Block, Block | None]]:
    found = blocks(read(page))
    pairs = []
    for index, block in enumerate(found):
        if block.lang == "yaml":
            after = found[index + 1] if index + 1 < len(found) else None
            pairs.append((block, after))
    return pairs


@pytest.mark.parametrize(
    ("block", "after"),
    _yaml_followed_by(CONFIGURATION) + _yaml_followed_by(TROUBLESHOOTING),
    ids=lambda value: f"line{value.line}" if isinstance(value, Block) else "",
)
def test_yaml_examples_are_valid_unless_shown_failing(block: Block, after: Block | None) -> None:
    shown_failing = after is not None and "edge: invalid configuration" in after.text
    try:
        load_settings(parse_yaml(block.text), environ={})
    except ConfigError:
        assert shown_failing, f"the YAML block at line {block.line} is invalid"
    else:
        assert not shown_failing, f"the YAML block at line {block.line} is valid"


# -- runnable examples ------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    argv: tuple[str, ...]
    expected: str
    config: str | None


def runnable_examples(page: Path) -> list[Example]:
    found = []
    config: str | None = None
    for block in blocks(read(page)):
        if block.lang == "yaml":
            config = block.text
            continue
        if block.lang != "console" or not block.text.startswith("$ "):
            continue
        command, _, output = block.text.partition("\n")
        if any(line.startswith("$ ") for line in output.splitlines()):
            continue  # a list of commands to type, not one command and its output
        argv = tuple(shlex.split(command[2:]))
        config_file = argv[argv.index("-c") + 1] if "-c" in argv else None
        if config_file in (None, "edge.yaml") and any(
            argv[: len(prefix)] == prefix for prefix in CHECKED_COMMANDS
        ):
            found.append(Example(page.name, block.line, argv, output, config_file and config))
    return found


EXAMPLES = runnable_examples(CONFIGURATION) + runnable_examples(TROUBLESHOOTING)


def test_the_pages_have_runnable_examples() -> None:
    pages = {example.page for example in EXAMPLES}
    assert pages == {CONFIGURATION.name, TROUBLESHOOTING.name}
    assert sum(e.argv[1] == "explain" for e in EXAMPLES) >= 5


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: f"{e.page}:{e.line}")
def test_examples_print_what_the_docs_show(
    example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if "-c" in example.argv:
        assert example.config is not None, "-c edge.yaml needs a YAML block above it"
        (tmp_path / "edge.yaml").write_text(example.config + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, list(example.argv[1:]), env=CLEAN_ENV)
    printed = [line.rstrip() for line in result.output.rstrip("\n").splitlines()]
    assert printed == example.expected.splitlines()
    failing = example.expected.startswith("edge: invalid configuration")
    assert result.exit_code == (2 if failing else 0)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("denial", [d for d in Denial if d not in HTTP_ONLY], ids=str)
def test_every_close_reason_has_an_entry_with_a_fix(denial: Denial) -> None:
    found = sections_naming(TROUBLESHOOTING, denial.reason)
    assert found, f"no heading names `{denial.reason}`"
    assert all(has_fix(section) for section in found)


@pytest.mark.parametrize("denial", list(Denial), ids=str)
def test_every_refusal_appears_with_its_reason_and_label(denial: Denial) -> None:
    text = read(TROUBLESHOOTING)
    assert f"`{denial.reason}`" in text
    assert denial.metric_label in text


@pytest.mark.parametrize("code", CLOSE_CODES)
def test_every_other_close_code_has_an_entry_with_a_fix(code: int) -> None:
    found = [s for s in sections(read(TROUBLESHOOTING)) if s.heading.startswith(f"{code}:")]
    assert len(found) == 1 and has_fix(found[0])


def http_denial_bodies() -> list[tuple[int, dict[str, str]]]:
    answers = [denial_response(AuthState("anonymous"))]
    answers += [denial_response(AuthState("anonymous", denial=d)) for d in HTTP_CREDENTIAL_DENIALS]
    answers.append(denial_response(AuthState("paired"), forbidden=True))
    return [(status, json.loads(body)) for status, _, body in answers]


@pytest.mark.parametrize(
    ("status", "body"),
    http_denial_bodies(),
    ids=lambda v: v["reason"] if isinstance(v, dict) else "",
)
def test_every_http_denial_has_an_entry_with_its_exact_body_and_a_fix(
    status: int, body: dict[str, str]
) -> None:
    found = [
        section
        for section in sections_naming(TROUBLESHOOTING, body["error"], body["reason"])
        if section.heading.startswith(str(status))
    ]
    assert len(found) == 1, f"no single '{status} `{body['error']}` ... `{body['reason']}`' entry"
    section = found[0]
    assert has_fix(section)
    shown = [json.loads(block.text) for block in blocks(section.body) if block.lang == "json"]
    assert shown == [body]


def test_the_metrics_endpoint_401_has_an_entry_with_a_fix() -> None:
    found = [s for s in sections(read(TROUBLESHOOTING)) if "metrics endpoint" in s.heading]
    assert len(found) == 1 and has_fix(found[0])
    assert "metrics.bearer_token" in found[0].body and "metrics.allowed_networks" in found[0].body


def test_every_entry_has_what_you_see_cause_confirm_and_fix() -> None:
    entries = [
        s
        for s in sections(read(TROUBLESHOOTING))
        if s.level == 3 and any(line.startswith("**Fix**") for line in s.body.splitlines())
    ]
    assert len(entries) >= len(Denial) - len(HTTP_ONLY) + len(CLOSE_CODES) + 6
    for entry in entries:
        for part in ("**What you see**", "**Cause**", "**Confirm**"):
            assert part in entry.body, f"{entry.heading!r} lacks {part}"


def test_quoted_control_ui_titles_are_the_ui_s_own_words() -> None:
    quoted = re.findall(r"Control UI: \*\*(.+?)\*\*", read(TROUBLESHOOTING).replace("\n", " "))
    assert len(quoted) >= len(Denial) - len(HTTP_ONLY)
    # The UI's words: its own script, and the refusal table it reads from the gateway.
    app = read(APP_JS) + json.dumps(ui_table())
    missing = sorted({title for title in quoted if f'"{title}"' not in app})
    assert missing == []


# -- edge doctor --------------------------------------------------------------------------------


def doctor_checks() -> list[str]:
    """The ``check`` of every ``Finding(level, check, ...)`` in edge/cli/doctor.py."""
    names = set()
    for node in ast.walk(ast.parse(read(DOCTOR_SOURCE))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Finding":
            check = node.args[1] if len(node.args) > 1 else None
            if isinstance(check, ast.Constant) and isinstance(check.value, str):
                names.add(check.value)
    return sorted(names)


def test_the_doctor_has_checks_to_document() -> None:
    assert {"config", "gateway token", "store", "proxy.trusted_proxies"} <= set(doctor_checks())


@pytest.mark.parametrize("check", doctor_checks())
def test_every_doctor_check_has_a_row(check: str) -> None:
    table = next(s for s in sections(read(TROUBLESHOOTING)) if "doctor" in s.heading)
    assert any(line.startswith(f"| `{check}` |") for line in table.body.splitlines())


# -- links --------------------------------------------------------------------------------------


def relative_links(page: Path) -> list[tuple[str, str]]:
    targets = []
    for line in prose_lines(read(page)):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                targets.append((page.relative_to(ROOT).as_posix(), target))
    return targets


LINKS = [link for page in LINKED_PAGES for link in relative_links(page)]


def test_own_pages_link_to_each_other() -> None:
    linked = {target.partition("#")[0] for _, target in LINKS}
    assert {"configuration.md", "troubleshooting.md"} <= linked


@pytest.mark.parametrize(("page", "target"), LINKS, ids=lambda v: v)
def test_relative_links_lead_to_files_and_headings(page: str, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    source = ROOT / page
    destination = (source.parent / path_part).resolve() if path_part else source
    assert destination.exists(), f"{page} links to missing {path_part}"
    if anchor and source in OWN_PAGES and destination.suffix == ".md":
        anchors = {slug(s.heading) for s in sections(read(destination))}
        assert anchor in anchors, f"{page} links to missing heading #{anchor} of {destination.name}"

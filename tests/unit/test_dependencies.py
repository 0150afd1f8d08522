"""``pyproject.toml`` says what Edge needs at run time: every import declared, one HTTP client.

Each third-party module the package imports (read with ``ast``, as the
architecture test reads them) belongs to a declared runtime dependency with
a lower bound. aiohttp is the one HTTP client at run time (the relays and the
webhook sender); httpx is the tests' and is declared in the ``test`` extra.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.unit.test_architecture import THIRD_PARTY, _imports_of

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> dict[str, str]:
    found = {}
    for requirement in requirements:
        match = _NAME.match(requirement)
        assert match, requirement
        found[_normal(match.group(1))] = match.group(3).split(";")[0].strip()
    return found


RUNTIME = _declared(PROJECT["dependencies"])
TEST = _declared(PROJECT["optional-dependencies"]["test"])


def test_every_runtime_dependency_has_a_lower_bound() -> None:
    assert {name: spec for name, spec in RUNTIME.items() if ">=" not in spec} == {}


def test_every_third_party_import_is_a_declared_runtime_dependency() -> None:
    imported = set().union(*THIRD_PARTY.values()) - set(sys.stdlib_module_names) - {"edge"}
    assert imported, "the import reader found nothing"
    owners = packages_distributions()
    undeclared = {
        module: owners.get(module)
        for module in sorted(imported)
        if not any(_normal(d) in RUNTIME for d in owners.get(module, []))
    }
    assert undeclared == {}


def test_aiohttp_is_the_one_http_client_at_run_time() -> None:
    clients = {"httpx", "requests", "urllib3", "http.client", "urllib.request", "aiohttp"}
    users = {
        module: sorted(
            name for name in _imports_of(module) if name in clients or name.split(".")[0] in clients
        )
        for module in THIRD_PARTY
    }
    used = {name for names in users.values() for name in names}
    assert used == {"aiohttp"}, {m: n for m, n in users.items() if n}
    assert "httpx" not in RUNTIME and "httpx" in TEST

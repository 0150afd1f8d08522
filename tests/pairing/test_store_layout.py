"""The shape of the pairing package: decisions once in the ledger, backends that only store.

Read from the source (no store is opened): what each module imports and calls.
"""

from __future__ import annotations

import ast
import fnmatch
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAIRING = ROOT / "edge" / "pairing"
BACKEND_MODULES = ("sqlite.py", "sqlite_tx.py", "redis.py", "redis_tx.py", "redis_records.py")
# The domain's decision helpers: whoever calls them is deciding something about pairing.
DECISION_HELPERS = {
    "approval_role",
    "approved_device",
    "device_event_data",
    "invite_event_data",
    "request_event_data",
    "new_request_id",
}
DECISION_METHODS = {"expired", "usable", "covers"}  # PairingRequest, Invite, Role


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks left out)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
                found.update(f"{child.module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(_tree(path))
    return found


@pytest.mark.parametrize("name", BACKEND_MODULES)
def test_backends_decide_nothing_about_pairing(name: str) -> None:
    tree = _tree(PAIRING / "store" / name)
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & DECISION_HELPERS, f"{name} imports {imported & DECISION_HELPERS}"
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not called & DECISION_METHODS, f"{name} calls {called & DECISION_METHODS}"


def test_the_ledger_is_where_the_decisions_are() -> None:
    tree = _tree(PAIRING / "store" / "ledger.py")
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported >= DECISION_HELPERS


def test_the_pairing_package_has_no_import_circle_and_no_web_layer() -> None:
    modules = {_module_name(path): path for path in PAIRING.rglob("*.py")}
    graph = {
        name: {m for m in _runtime_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    for name, path in modules.items():
        outside = {m for m in _runtime_imports(path) if m.startswith(("starlette", "edge.gateway"))}
        assert not outside, f"{name} imports {sorted(outside)}"

    def cycle_from(start: str, node: str, seen: tuple[str, ...]) -> tuple[str, ...] | None:
        for nxt in sorted(graph[node]):
            if nxt == start:
                return (*seen, nxt)
            if nxt not in seen:
                found = cycle_from(start, nxt, (*seen, nxt))
                if found:
                    return found
        return None

    for name in sorted(modules):
        assert cycle_from(name, name, (name,)) is None, " -> ".join(
            cycle_from(name, name, (name,)) or ()
        )


def test_every_pairing_module_stays_under_600_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in PAIRING.rglob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size >= 600} == {}


def test_the_lua_scripts_ship_in_the_wheel() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["edge"]
    scripts = sorted((PAIRING / "store" / "lua").glob("*.lua"))
    assert scripts
    for script in scripts:
        relative = str(script.relative_to(ROOT / "edge"))
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative

"""The shape of the package, held by a test so it cannot drift back.

The import graph is read from the source with ``ast`` (nothing is imported), so the test sees
every import a module makes, including those inside functions: a lazy import is still a
dependency, and a circle hidden inside a function is still a circle. Only imports under
``if TYPE_CHECKING:`` are left out, because they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "edge"
MAX_MODULE_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node that runs: the bodies of ``if TYPE_CHECKING:`` are skipped."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports_of(module: str) -> set[str]:
    """The names of everything ``module`` imports at run time (edge modules and third parties)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_from(module, path.name == "__init__.py", node)
            found.add(target)
            # ``from edge.pairing import store`` imports the submodule edge.pairing.store.
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if f"{target}.{alias.name}" in MODULES
            )
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            # importlib.import_module("edge.x") is an import the statement form would show.
            found.add(node.args[0].value)
    return found


def _edge_target(name: str) -> str | None:
    """The edge module an imported name lands in (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


GRAPH: dict[str, set[str]] = {
    module: {
        target
        for name in _imports_of(module)
        if (target := _edge_target(name)) is not None and target != module
    }
    for module in MODULES
}
THIRD_PARTY: dict[str, set[str]] = {
    module: {name.split(".")[0] for name in _imports_of(module) if _edge_target(name) is None}
    for module in MODULES
}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _is_gateway(module: str) -> bool:
    return module in ("edge.app", "edge.gateway") or module.startswith("edge.gateway.")


def _is_parent_package(importer: str, imported: str) -> bool:
    """A package's ``__init__`` importing its own submodules is how a package re-exports."""
    return imported.startswith(importer + ".") and MODULES[importer].name == "__init__.py"


def test_the_import_graph_is_read_from_the_real_package() -> None:
    # Guards the reader itself: if it saw no edges, every check below would pass vacuously.
    assert len(MODULES) > 40
    assert sum(len(targets) for targets in GRAPH.values()) > 100
    assert "edge.config" in GRAPH["edge.app"]
    assert "starlette" in THIRD_PARTY["edge.app"]


def test_the_circle_finder_finds_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    graph = {
        module: {t for t in targets if not _is_parent_package(module, t)}
        for module, targets in GRAPH.items()
    }
    assert _circles(graph) == []


@pytest.mark.parametrize("layer", ["edge.net", "edge.pairing"])
def test_the_pure_layers_import_neither_starlette_nor_the_gateway(layer: str) -> None:
    offenders = {
        module: sorted(
            {t for t in GRAPH[module] if _is_gateway(t)}
            | (THIRD_PARTY[module] & {"starlette", "uvicorn"})
        )
        for module in MODULES
        if module == layer or module.startswith(layer + ".")
    }
    assert {m: o for m, o in offenders.items() if o} == {}


def test_of_the_cli_only_serve_reaches_the_asgi_layer() -> None:
    offenders = {
        module: sorted(t for t in GRAPH[module] if _is_gateway(t))
        for module in MODULES
        if module.startswith("edge.cli") and module != "edge.cli.serve"
    }
    assert {m: o for m, o in offenders.items() if o} == {}


def test_no_module_is_over_the_size_a_reader_can_hold() -> None:
    sizes = {
        module: len(path.read_text(encoding="utf-8").splitlines())
        for module, path in MODULES.items()
    }
    assert {m: n for m, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_only_the_app_wires_the_gateway_runtime() -> None:
    importers = sorted(name for name, targets in GRAPH.items() if "edge.gateway.runtime" in targets)
    assert importers == ["edge.app"]


def test_the_cli_loads_no_asgi_layer_until_edge_serve_runs() -> None:
    # What actually loads, beside what the source says: `edge --help` must not pay for Starlette.
    probe = (
        "import sys, edge.cli; "
        "print(','.join(sorted(m for m in sys.modules "
        "if m == 'edge.gateway' or m.startswith(('edge.gateway.', 'edge.app', 'starlette')))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    ).stdout.strip()
    assert loaded == ""

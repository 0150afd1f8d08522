"""The Control UI's ES modules: each stays small, and each one imported is served as JavaScript.

The page loads ``/ui/app.js`` as a module and the browser fetches every
``import ... from "./x.js"`` from ``/ui/``. A module the dashboard route did
not serve, or served under a type other than JavaScript, would stop the whole
page from running (module scripts are checked strictly, and the dashboard
sends ``nosniff``), so each one is fetched here the way the browser does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from edge.gateway.dashboard import SECURITY_HEADERS
from tests.conftest import REMOTE, client_for

UI_DIR = Path(__file__).resolve().parents[2] / "edge" / "ui"
MODULES = sorted(UI_DIR.glob("*.js"))
MAX_LINES = 600
_IMPORT = re.compile(r"""^\s*import\s[^"']*?\sfrom\s+["']\./([\w.-]+)["']""", re.M)
_PAGE_SCRIPT = re.compile(r"""<script\s+type="module"\s+src="/ui/([\w.-]+)">""")
_JAVASCRIPT_TYPES = ("text/javascript", "application/javascript")


def imported_modules() -> list[str]:
    """Every module the page's entry script reaches, entry included, in a stable order."""
    entries = _PAGE_SCRIPT.findall((UI_DIR / "index.html").read_text(encoding="utf-8"))
    seen: list[str] = []
    todo = list(entries)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        path = UI_DIR / name
        if path.is_file():
            todo.extend(_IMPORT.findall(path.read_text(encoding="utf-8")))
    return seen


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_every_ui_module_is_under_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{path.name} has {lines} lines"


def test_the_page_reaches_every_ui_module_through_its_imports() -> None:
    reached = imported_modules()
    assert reached[0] == "app.js"
    assert sorted(reached) == sorted(path.name for path in MODULES)


@pytest.mark.parametrize("name", imported_modules())
def test_every_imported_module_is_served_as_javascript_with_the_dashboard_headers(
    app: Any, name: str
) -> None:
    with client_for(app, REMOTE, "http://127.0.0.1:18789") as client:
        response = client.get(f"/ui/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0].strip() in _JAVASCRIPT_TYPES
    assert response.text == (UI_DIR / name).read_text(encoding="utf-8")
    for header, value in SECURITY_HEADERS:
        assert response.headers.get_list(header.decode("ascii")) == [value.decode("ascii")]

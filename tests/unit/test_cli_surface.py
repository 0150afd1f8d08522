"""What the command line promises around the commands: help, --json, completion, exit codes.

Every command has ``--json``, help on every option and an example in its help;
``edge completion`` prints click's scripts; usage and configuration errors
exit 2 on every path, a taken port included (before any banner); ``edge
doctor`` only looks.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from edge.cli import cli, main
from edge.pairing.store import open_store
from edge.pairing.store.sqlite import SCHEMA_VERSION

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


def leaves(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every runnable command of the tree, as its words after ``edge``."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaves(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for word in path:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return command


def every_command(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield (*path, name), command


def bad_keys(document: Any, where: str = "") -> list[str]:
    """Every mapping key, at any depth, that is not camelCase (with where it sits)."""
    if isinstance(document, dict):
        found = [f"{where}.{key}" for key in document if not CAMEL.match(str(key))]
        for key, value in document.items():
            found += bad_keys(value, f"{where}.{key}")
        return found
    if isinstance(document, list):
        return [bad for i, item in enumerate(document) for bad in bad_keys(item, f"{where}[{i}]")]
    return []


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data"}))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def edge(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    """``edge`` as a separate process, as a shell runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **(env or {})},
        timeout=60,
    )


# -- the tree -------------------------------------------------------------------------------------


def test_the_tree_holds_the_commands_the_docs_name() -> None:
    found = {" ".join(path) for path in leaves()}
    assert {
        "serve",
        "gateway reload",
        "devices list",
        "devices approve",
        "token show",
        "doctor",
        "explain",
        "pair",
        "store migrate",
        "completion",
    } <= found


def test_every_command_takes_json() -> None:
    missing = [
        " ".join(path)
        for path in leaves()
        if not any(p.name == "as_json" and "--json" in p.opts for p in command_at(path).params)
    ]
    assert missing == []


def test_every_option_has_help_and_every_command_an_example() -> None:
    no_help = []
    no_example = []
    for path, command in every_command():
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                no_help.append(f"edge {' '.join(path)} {param.opts[0]}")
        if "Example" not in (command.help or ""):
            no_example.append(f"edge {' '.join(path)}")
    assert no_help == []
    assert no_example == []


def test_every_option_read_from_the_environment_shows_its_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with_env = [
        (path, param)
        for path, command in every_command()
        for param in command.params
        if isinstance(param, click.Option) and param.envvar
    ]
    assert {str(param.envvar) for _, param in with_env} == {"EDGE_CONFIG", "EDGE_GATEWAY_TOKEN"}
    for path, param in with_env:
        assert param.show_envvar, (path, param.name)
        assert str(param.envvar).startswith("EDGE_")
    code, out, _ = run(capsys, "devices", "list", "--help")
    assert code == 0 and "env var: EDGE_CONFIG" in out
    code, out, _ = run(capsys, "pair", "--help")
    assert "env var: EDGE_GATEWAY_TOKEN" in out
    code, out, _ = run(capsys, "--help")
    for name in (
        "EDGE_CONFIG",
        "EDGE_GATEWAY_TOKEN",
        "EDGE_STORE_PASSWORD",
        "EDGE_METRICS_TOKEN",
        "EDGE_PAIR_DIR",
    ):
        assert name in out


# -- --json without a gateway ---------------------------------------------------------------------


def test_offline_json_documents_parse_and_use_camel_case(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    settings_dir = tmp_path / "data"
    settings_dir.mkdir(mode=0o700)
    open_store(None, settings_dir).close()
    c = str(config_file)
    runs = {
        "config show": ["config", "show", "-c", c],
        "config check": ["config", "check", "-c", c],
        "explain": ["explain", "-c", c, "--peer", "127.0.0.1", "-H", "Host: localhost"],
        "store info": ["store", "info", "-c", c],
        "dashboard": ["dashboard", "-c", c],
        "devices list": ["devices", "list", "-c", c],
        "devices invites": ["devices", "invites", "-c", c],
        "completion": ["completion", "fish"],
    }
    for name, args in runs.items():
        code, out, err = run(capsys, *args, "--json")
        assert code == 0, (name, err)
        document = json.loads(out)
        assert bad_keys(document) == [], name
    shown = json.loads(run(capsys, "config", "show", "-c", c, "--json")[1])
    assert shown["settings"]["proxy"]["trustedProxies"] == []
    whoami = json.loads(run(capsys, *runs["explain"], "--json")[1])
    assert {"trustedPeer", "localRule", "headerUsed", "peerCheck"} <= set(whoami)
    assert "foundBy" in whoami["peer"]


def test_a_refusal_under_json_is_an_error_document_with_the_same_exit_code(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code, out, err = run(capsys, "store", "info", "-c", str(config_file), "--json")
    assert code == 1
    assert json.loads(out) == {
        "error": "refused",
        "detail": json.loads(out)["detail"],
    }
    assert "there is no SQLite store" in json.loads(out)["detail"]
    assert err == ""
    code, out, _ = run(capsys, "devices", "list", "--bogus", "--json")
    assert code == 2 and json.loads(out)["error"] == "usage"
    assert "--bogus" in json.loads(out)["detail"]


# -- exit codes -----------------------------------------------------------------------------------


def test_usage_and_configuration_errors_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "devices", "list", "--bogus")[0] == 2
    assert run(capsys, "completion", "tcsh")[0] == 2
    missing = str(tmp_path / "nowhere.yaml")
    for args in (["config", "check"], ["devices", "list"], ["doctor"], ["serve"]):
        code, out, err = run(capsys, *args, "-c", missing)
        assert code == 2, args
        assert out == "" and err.startswith("edge: "), args
        code, out, _ = run(capsys, *args, "-c", missing, "--json")
        assert code == 2 and json.loads(out)["error"] == "config", args
    assert not (tmp_path / "data").exists()


def test_a_taken_port_is_exit_2_with_one_line_before_any_banner(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "edge.yaml"
        config.write_text(
            yaml.safe_dump({"data_dir": "data", "server": {"host": "127.0.0.1", "port": port}})
        )
        message = (
            f"server.port: cannot listen on 127.0.0.1:{port} (Address already in use); "
            "is another gateway running? Choose another server.port or --port"
        )
        result = edge("serve", "-c", str(config))
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [f"edge: {message}"]
        result = edge("serve", "-c", str(config), "--json")
        assert result.returncode == 2 and result.stderr == ""
        assert json.loads(result.stdout) == {"error": "config", "detail": message}
    assert not (tmp_path / "data").exists()


# -- completion -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_each_shell(
    capsys: pytest.CaptureFixture[str], shell: str
) -> None:
    code, out, _ = run(capsys, "completion", shell)
    assert code == 0 and "_EDGE_COMPLETE" in out and len(out) > 200
    code, out, _ = run(capsys, "completion", shell, "--json")
    assert code == 0 and json.loads(out)["shell"] == shell


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_accepts_the_script_and_completes_devices(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, script, _ = run(capsys, "completion", "bash")
    assert code == 0
    path = tmp_path / "edge.bash"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "edge"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m edge.cli "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    probe = (
        f"source {path}; COMP_WORDS=(edge dev); COMP_CWORD=1; "
        '_edge_completion edge; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["devices"]


# -- doctor only looks ----------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, bytes | None, int | None]]:
    """Every path under ``root`` with its mode, and for files their bytes and mtime.

    A directory's own mtime is left out: reading a SQLite database in WAL mode
    brings its -wal and -shm files for as long as it is open, whoever reads it.
    """
    found: dict[str, tuple[int, bytes | None, int | None]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_file():
            found[str(path.relative_to(root))] = (
                info.st_mode,
                path.read_bytes(),
                info.st_mtime_ns,
            )
        else:
            found[str(path.relative_to(root))] = (info.st_mode, None, None)
    return found


@pytest.mark.parametrize("as_json", [False, True])
def test_doctor_on_a_fresh_directory_leaves_it_as_it_was(tmp_path: Path, as_json: bool) -> None:
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"data_dir": "data"}))
    before = tree(tmp_path)
    result = edge("doctor", "-c", "edge.yaml", *(["--json"] if as_json else []), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(tmp_path) == before
    assert "will be created" in result.stdout


def test_doctor_on_a_used_store_leaves_every_byte(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"data_dir": "data"}))
    (tmp_path / "data").mkdir(mode=0o700)
    open_store(None, tmp_path / "data").close()
    before = tree(tmp_path)
    result = edge("doctor", "-c", "edge.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(tmp_path) == before
    store = [f for f in json.loads(result.stdout) if f["check"] == "store"]
    assert store == [
        {
            "level": "ok",
            "check": "store",
            "message": f"sqlite://{tmp_path / 'data' / 'edge.sqlite3'}: 0 device(s)",
            "fix": "",
        }
    ]


def test_doctor_leaves_an_older_schema_for_serve_to_upgrade(tmp_path: Path) -> None:
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({"data_dir": "data"}))
    (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "data" / "edge.sqlite3"
    open_store(None, tmp_path / "data").close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = tree(tmp_path)
    result = edge("doctor", "-c", "edge.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree(tmp_path) == before
    assert (
        f"its schema is {SCHEMA_VERSION - 1}; the next `edge serve` upgrades it to "
        f"{SCHEMA_VERSION}" in result.stdout
    )

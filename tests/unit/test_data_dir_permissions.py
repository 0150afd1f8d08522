"""Which files of ``data_dir`` must be the gateway user's alone, and what ``edge doctor`` says.

The refusal of ``edge serve`` itself is pinned against the real process in
``tests/integration/test_data_dir_trust.py``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.config import load_settings
from edge.datadir import permission_problems, token_file_problems
from edge.pairing.identity import VerifiedIdentity
from edge.pairing.models import Role
from edge.pairing.service import PairingPolicy, PairingService
from edge.pairing.store.sqlite import SqliteStore


def _settings(tmp_path: Path, **extra: object) -> object:
    return load_settings({"data_dir": str(tmp_path / "data"), **extra}, environ={})


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mode for p in sorted(path.rglob("*"))}


def test_a_private_data_dir_has_no_problems(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / "gateway_token").write_text("x" * 43)
    (data / "gateway_token").chmod(0o600)
    assert permission_problems(_settings(tmp_path)) == []  # type: ignore[arg-type]


def test_a_missing_data_dir_is_no_problem(tmp_path: Path) -> None:
    assert permission_problems(_settings(tmp_path)) == []  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("gateway_token", "gateway token file"),
        ("edge.sqlite3", "pairing store"),
        ("edge.sqlite3-wal", "pairing store"),
        ("device.key", "key file"),
    ],
)
def test_each_secret_writable_by_others_is_named_with_its_fix(
    tmp_path: Path, name: str, what: str
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    secret = data / name
    secret.write_text("secret")
    secret.chmod(0o602)
    (problem,) = permission_problems(_settings(tmp_path))  # type: ignore[arg-type]
    assert problem.line() == (
        f"{what} {secret} is writable by others (mode 0602); run: chmod 600 {secret}"
    )


def test_a_token_file_in_a_shared_but_sticky_directory_is_accepted(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    token = shared / "token"
    token.write_text("x" * 43)
    token.chmod(0o600)
    assert token_file_problems(token) == []
    shared.chmod(0o777)
    (problem,) = token_file_problems(token)
    assert problem.fix == f"chmod 700 {shared}"


def test_a_configured_store_elsewhere_is_checked_too(tmp_path: Path) -> None:
    elsewhere = tmp_path / "db"
    elsewhere.mkdir()
    elsewhere.chmod(0o770)
    settings = _settings(tmp_path, store={"url": f"sqlite:///{elsewhere}/edge.db"})
    (problem,) = permission_problems(settings)  # type: ignore[arg-type]
    assert problem.what == "pairing store's directory"
    assert "writable by group (mode 0770)" in problem.problem


def test_doctor_reports_data_dir_problems_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("EDGE_"):
            monkeypatch.delenv(name)
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    token = data / "gateway_token"
    token.write_text("x" * 43)
    token.chmod(0o660)
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "data"}))
    before = _tree(tmp_path)
    code = main(["doctor", "-c", str(config)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"data_dir {data} is writable by group and others (mode 0777)" in out
    assert f"fix: chmod 700 {data}" in out
    assert f"gateway token file {token} is writable by group (mode 0660)" in out
    assert f"fix: chmod 600 {token}" in out
    assert _tree(tmp_path) == before  # read only: no store made, no mode fixed


# -- the store's file under a running gateway -------------------------------------------------


def _filled_store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "edge.sqlite3")
    service = PairingService(
        store, "g" * 43, PairingPolicy(max_pending=10_000, max_pending_per_client=10_000)
    )
    for number in range(300):
        identity = VerifiedIdentity(device_id=f"{number:064x}", public_key="k" * 43)
        service.request_pairing(
            identity,
            name=f"device {number}",
            role=Role.USER,
            reason="not-paired",
            client_ip="198.51.100.1",
            user_agent="x" * 200,
        )
    return store


def test_a_whole_store_file_has_no_problem(tmp_path: Path) -> None:
    store = _filled_store(tmp_path)
    try:
        assert store.file_problem(deep=False) is None
        assert store.file_problem(deep=True) is None
    finally:
        store.close()


def test_a_store_file_replaced_by_another_is_noticed(tmp_path: Path) -> None:
    store = _filled_store(tmp_path)
    try:
        copy = tmp_path / "copy"
        copy.write_bytes(store.path.read_bytes())
        copy.replace(store.path)
        assert (
            store.file_problem(deep=False)
            == f"SQLite store {store.path} was replaced by another file"
        )
    finally:
        store.close()


def test_a_store_file_damaged_in_place_fails_quick_check(tmp_path: Path) -> None:
    store = _filled_store(tmp_path)
    try:
        with sqlite3.connect(store.path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = store.path.stat().st_size
        with store.path.open("r+b") as raw:
            for offset in range(4096 * 2, size, 4096):
                raw.seek(offset + 100)
                raw.write(b"\xff" * 64)  # every page but the first two, same size
        assert store.path.stat().st_size == size
        assert store.file_problem(deep=False) is None  # a stat cannot see this
        problem = store.file_problem(deep=True)
        assert problem is not None and "failed PRAGMA quick_check" in problem
    finally:
        store.close()

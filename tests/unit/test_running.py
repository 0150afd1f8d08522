"""The running-gateway record, server.public_url, the link base and the proxy cause's fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.causes import UNTRUSTED_PROXY
from edge.cli import cli
from edge.cli.common import ConfigProblem, public_base
from edge.config import ConfigError, load_settings
from edge.refusals import ui_table
from edge.running import forget_gateway, record_gateway, running_gateways, runtime_dir


def test_a_gateway_is_found_while_it_runs_and_forgotten_after(tmp_path: Path) -> None:
    env = {"EDGE_RUNTIME_DIR": str(tmp_path / "run")}
    config = tmp_path / "edge.yaml"
    path = record_gateway(str(config), tmp_path / "data", "http://127.0.0.1:1/", env)
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    (found,) = running_gateways(env)
    assert (found.pid, found.config, found.data_dir) == (
        os.getpid(),
        str(config.resolve()),
        str((tmp_path / "data").resolve()),
    )
    forget_gateway(path)
    assert running_gateways(env) == []


def test_a_record_of_a_dead_process_is_dropped(tmp_path: Path) -> None:
    env = {"EDGE_RUNTIME_DIR": str(tmp_path / "run")}
    path = record_gateway(None, tmp_path, "http://127.0.0.1:1/", env)
    assert path is not None
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999'))
    assert running_gateways(env) == []
    assert not path.exists()


def test_a_runtime_directory_others_can_write_is_neither_read_nor_written(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    env = {"EDGE_RUNTIME_DIR": str(shared)}
    assert record_gateway(None, tmp_path, "http://127.0.0.1:1/", env) is None
    assert running_gateways(env) == []


def test_the_runtime_directory_follows_xdg_then_tmp() -> None:
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/edge")
    assert runtime_dir({}).name == f"edge-{os.getuid()}"
    assert runtime_dir({"EDGE_RUNTIME_DIR": "/x", "XDG_RUNTIME_DIR": "/y"}) == Path("/x")


@pytest.mark.parametrize(
    "value",
    [
        "edge.example.com",
        "ftp://edge.example.com",
        "https://",
        "https://e.x/?a=1",
        "https://e.x/#f",
    ],
)
def test_public_url_must_be_an_absolute_http_url_without_query_or_fragment(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"server": {"public_url": value}}, environ={})
    assert "server.public_url" in str(raised.value)


def test_public_url_drops_a_final_slash_and_keeps_a_path() -> None:
    settings = load_settings({"server": {"public_url": "https://e.x/edge/"}}, environ={})
    assert settings.server.public_url == "https://e.x/edge"


def test_a_loopback_link_for_another_device_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigProblem) as raised:
        public_base(load_settings({}, environ={}))
    assert "server.public_url" in str(raised.value.message) and "--url" in raised.value.message
    public = load_settings({"server": {"public_url": "https://e.x"}}, environ={})
    assert public_base(public) == "https://e.x"
    assert public_base(public, "https://other.example/") == "https://other.example"
    lan = load_settings({"server": {"host": "192.0.2.10"}, "auth": {"token": "t" * 32}}, environ={})
    assert public_base(lan) == "http://192.0.2.10:18789"


def test_the_proxy_cause_names_the_peer_and_quotes_an_ipv6_one() -> None:
    assert UNTRUSTED_PROXY.fix_for("127.0.0.1") == "proxy:\n  trusted_proxies: [127.0.0.1]"
    assert UNTRUSTED_PROXY.fix_for("::1") == 'proxy:\n  trusted_proxies: ["::1"]'
    served = ui_table()["causes"][UNTRUSTED_PROXY.code]
    assert served["refusal"] in {e["reason"] for e in ui_table()["closeReasons"].values()}
    assert "auth.allowed_origins" not in served["message"]


def test_edge_devices_invite_uses_public_url_and_refuses_a_loopback_link(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    config.write_text(f"data_dir: {data}\n")
    runner = CliRunner()
    env = {"EDGE_CONFIG": None, "EDGE_RUNTIME_DIR": str(tmp_path / "run")}
    refused = runner.invoke(cli, ["devices", "invite", "-c", str(config), "--no-qr"], env=env)
    assert refused.exit_code == 2
    assert "server.public_url is not set" in refused.output
    config.write_text(f"data_dir: {data}\nserver:\n  public_url: https://edge.example.com/\n")
    created = runner.invoke(cli, ["devices", "invite", "-c", str(config), "--no-qr"], env=env)
    assert created.exit_code == 0, created.output
    assert "url:  https://edge.example.com/#invite=" in created.output
    assert "edge pair --url https://edge.example.com --invite" in created.output

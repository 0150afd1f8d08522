"""The command line without a running server: exit codes 0/1/2 and what each command prints."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.config import load_settings
from edge.gateway.protocol import connect_attempt
from edge.pairing.models import Role
from edge.pairing.service import PairingService
from edge.pairing.store import open_store
from tests.conftest import GATEWAY_TOKEN, Device


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(
        yaml.safe_dump({"data_dir": "data", "proxy": {"trusted_proxies": ["127.0.0.1"]}})
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def service_for(config_file: Path) -> PairingService:
    settings = load_settings(config_file, environ={})
    return PairingService(open_store(None, settings.data_dir), GATEWAY_TOKEN)


def ask(service: PairingService, name: str, ip: str = "198.51.100.7", role: str = "user") -> Any:
    device = Device(name)
    outcome = service.connect(
        attempt=connect_attempt(device.connect_frame("nonce-1", {"token": GATEWAY_TOKEN}, role)),
        nonce="nonce-1",
        client_ip=ip,
        local=False,
        user_agent="pytest",
    )
    return device, outcome.request  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("EDGE_"):
            monkeypatch.delenv(name)


def test_config_check_ok_and_bad(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "config", "check", "-c", str(config_file))
    assert code == 0 and "configuration OK" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("proxy:\n  trusted_proxies: ['10.0.0.5/24']\n")
    code, _, err = run(capsys, "config", "check", "-c", str(bad))
    assert code == 2
    assert "proxy.trusted_proxies[0]: '10.0.0.5/24' has host bits set" in err
    assert "Traceback" not in err


def test_unknown_command_and_bad_option_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(capsys, "frobnicate")[0] == 2
    assert run(capsys, "devices", "approve")[0] == 2  # neither REQUEST nor --latest
    assert run(capsys, "explain", "--peer", "not-an-ip")[0] == 2


def test_explain_prints_the_walk_and_the_decision(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    code, out, _ = run(
        capsys,
        "explain",
        "-c",
        str(config_file),
        "--peer",
        "127.0.0.1",
        "-H",
        "X-Forwarded-For: 203.0.113.9, 127.0.0.1",
        "-H",
        "Host: edge.example.com",
    )
    assert code == 0
    assert "client    203.0.113.9" in out
    assert "decision  REMOTE" in out
    assert "proxy headers present" in out
    code, out, _ = run(
        capsys,
        "explain",
        "-c",
        str(config_file),
        "--peer",
        "127.0.0.1",
        "--peer-uid",
        str(os.geteuid()),
        "-H",
        "Host: localhost",
    )
    assert "decision  LOCAL" in out and "direct loopback client" in out


def test_explain_names_the_fix_for_an_untrusted_proxy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys, "explain", "--peer", "10.1.2.3", "-H", "X-Forwarded-For: 203.0.113.9"
    )
    assert code == 0
    assert "untrusted_proxy_headers" in out and "proxy.trusted_proxies" in out
    code, out, _ = run(capsys, "explain", "--peer", "10.1.2.3", "--json")
    assert json.loads(out)["client"]["ip"] == "10.1.2.3"


def test_devices_list_approve_reject_rename_revoke(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    service = service_for(config_file)
    laptop, laptop_request = ask(service, "laptop")
    _, phone_request = ask(service, "phone", ip="198.51.100.8")
    code, out, _ = run(capsys, "devices", "list", "-c", str(config_file))
    assert code == 0
    assert laptop_request.id in out and phone_request.id in out and "198.51.100.8" in out
    listing = json.loads(run(capsys, "devices", "list", "-c", str(config_file), "--json")[1])
    assert {r["name"] for r in listing["requests"]} == {"laptop", "phone"}

    code, out, _ = run(
        capsys,
        "devices",
        "approve",
        laptop_request.id.lower().replace("-", ""),
        "--role",
        "admin",
        "-c",
        str(config_file),
    )
    assert code == 0 and "as admin" in out
    code, out, _ = run(capsys, "devices", "reject", phone_request.id, "-c", str(config_file))
    assert code == 0 and "rejected" in out
    code, _, err = run(capsys, "devices", "approve", phone_request.id, "-c", str(config_file))
    assert code == 1 and err

    code, out, _ = run(
        capsys, "devices", "rename", laptop.id[:12], "work laptop", "-c", str(config_file)
    )
    assert code == 0 and "work laptop" in out
    code, out, _ = run(capsys, "devices", "revoke", laptop.id, "-c", str(config_file))
    assert code == 0 and "revoked" in out
    code, _, err = run(capsys, "devices", "revoke", "ffffffffffff", "-c", str(config_file))
    assert code == 1


def test_approve_latest(capsys: pytest.CaptureFixture[str], config_file: Path) -> None:
    service = service_for(config_file)
    ask(service, "older")
    ask(service, "newer", ip="198.51.100.99")
    code, out, _ = run(capsys, "devices", "approve", "--latest", "-c", str(config_file))
    # --latest shows the newest request and the command that approves it; that command approves.
    (command,) = [line.split() for line in out.splitlines() if "edge devices approve" in line]
    code, out, _ = run(capsys, *command[1:], "-c", str(config_file))
    assert code == 0 and "'newer'" in out
    assert [d.name for d in service.list_devices()] == ["newer"]
    assert service.list_devices()[0].role == Role.USER


def test_approve_latest_with_nothing_pending_is_refused(
    capsys: pytest.CaptureFixture[str], config_file: Path
) -> None:
    assert run(capsys, "devices", "approve", "--latest", "-c", str(config_file))[0] == 1


def test_token_generate_show_rotate(
    capsys: pytest.CaptureFixture[str], config_file: Path, tmp_path: Path
) -> None:
    assert run(capsys, "token", "show", "-c", str(config_file))[0] == 1
    code, out, _ = run(capsys, "token", "generate", "-c", str(config_file))
    assert code == 0
    path = tmp_path / "data" / "gateway_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, shown, _ = run(capsys, "token", "show", "-c", str(config_file))
    assert code == 0 and shown.strip() == path.read_text().strip()
    assert len(shown.strip()) == 43
    code, out, _ = run(capsys, "token", "rotate", "--yes", "-c", str(config_file))
    assert code == 0 and shown.strip() not in out
    assert path.read_text().strip() != shown.strip()


def test_doctor_reports_and_generates_the_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "public.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "server": {"host": "0.0.0.0"}}))
    code, out, _ = run(capsys, "doctor", "-c", str(path))
    assert code == 1
    assert "gateway token" in out and "fix:" in out and "--generate-gateway-token" in out
    code, out, _ = run(capsys, "doctor", "-c", str(path), "--generate-gateway-token")
    assert code == 0 and "generated a new gateway token" in out


def test_doctor_warns_about_broad_trusted_networks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "broad.yaml"
    path.write_text(
        yaml.safe_dump({"data_dir": "data", "proxy": {"trusted_proxies": ["10.0.0.0/7"]}})
    )
    _, out, _ = run(capsys, "doctor", "-c", str(path), "--json")
    findings = json.loads(out)
    assert any(f["check"] == "proxy.trusted_proxies" and f["level"] == "warn" for f in findings)
    assert all(f["fix"] for f in findings if f["level"] != "ok")


def test_doctor_names_an_upstream_on_the_control_origin_for_what_it_is(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "shared.yaml"
    upstreams = [
        {"host": "grafana.example.com", "url": "http://127.0.0.1:3000"},
        {"prefix": "/status/", "url": "http://127.0.0.1:8081", "share_control_origin": True},
    ]
    path.write_text(yaml.safe_dump({"data_dir": "data", "upstreams": upstreams}))
    _, out, _ = run(capsys, "doctor", "-c", str(path), "--json")
    shared = [f for f in json.loads(out) if f["check"].startswith("upstreams[")]
    assert [f["check"] for f in shared] == ["upstreams[1].share_control_origin"]
    assert shared[0]["level"] == "warn"
    assert "like an admin" in shared[0]["message"] and "upstreams[].host" in shared[0]["fix"]


def test_serve_refuses_a_public_bind_without_a_token(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "public.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "server": {"host": "0.0.0.0", "port": 1}}))
    code, _, err = run(capsys, "serve", "-c", str(path))
    assert code == 2
    assert "no gateway token is configured" in err


@pytest.mark.parametrize(
    ("server", "url"),
    [
        ({}, "http://127.0.0.1:18789/"),
        ({"host": "0.0.0.0", "port": 9000}, "http://127.0.0.1:9000/"),
        ({"host": "::1", "port": 9001}, "http://[::1]:9001/"),
    ],
)
def test_dashboard_prints_this_machines_url_and_opens_it_on_request(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    server: dict[str, Any],
    url: str,
) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", "server": server}))
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", opened.append)
    code, out, _ = run(capsys, "dashboard", "-c", str(path))
    assert (code, out.strip(), opened) == (0, url, [])
    code, out, _ = run(capsys, "dashboard", "--open", "-c", str(path))
    assert (code, out.strip(), opened) == (0, url, [url])

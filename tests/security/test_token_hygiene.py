"""Token hygiene: secrets never logged, never in URLs, stored hashed, in private files, compared in constant time."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import edge
from edge import create_app
from edge.pairing.identity import DeviceKey
from edge.pairing.tokens import secrets_equal
from edge.serialize import invite_url
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws
from tests.integration.conftest import EdgeServer, free_port

EDGE_DIR = Path(edge.__file__).parent
METRICS_TOKEN = "metrics-bearer-token-0123456789abcdef"


# -- never logged -------------------------------------------------------------------------------


def _handshake(server: EdgeServer, device: Device, auth: dict[str, str], **headers: str) -> Any:
    with connect(server.ws_url, additional_headers=headers, proxy=None, open_timeout=10) as ws:
        challenge = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, "user")))
        try:
            return json.loads(ws.recv(timeout=10))
        except ConnectionClosed:
            return {"type": "closed", "reason": ws.close_reason}


@pytest.mark.integration
def test_no_secret_reaches_the_log_of_a_full_run_at_debug_level(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    server = edge_server_factory(
        {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "metrics": {"bearer_token": METRICS_TOKEN},
            "logging": {"level": "debug", "format": "json", "access_log": True},
        }
    )
    remote = {"X-Forwarded-For": "198.51.100.20"}
    secrets = [GATEWAY_TOKEN, METRICS_TOKEN]
    admin = Device("admin laptop")
    admin_token = _handshake(server, admin, {})["deviceToken"]  # direct loopback: local admin
    secrets.append(admin_token)

    phone = Device("phone")
    asked = _handshake(server, phone, {"token": GATEWAY_TOKEN}, **remote)
    assert asked["code"] == "PAIRING_REQUIRED"
    server.cli("devices", "approve", asked["requestId"])
    phone_token = _handshake(server, phone, {"token": GATEWAY_TOKEN}, **remote)["deviceToken"]
    secrets.append(phone_token)
    assert _handshake(server, phone, {"deviceToken": phone_token}, **remote)["type"] == "hello"
    assert (
        _handshake(server, Device(), {"token": "wrong-" + GATEWAY_TOKEN}, **remote)["type"]
        == "closed"
    )

    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as http:
        bearer = {**remote, "Authorization": f"Bearer {phone_token}"}
        assert http.get("/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"
        assert http.post("/api/session", headers=bearer).status_code == 200
        assert http.get("/api/whoami", headers=remote).json()["auth"]["state"] == "paired"
        assert (
            http.get(
                "/api/devices", headers={**remote, "Authorization": "Bearer guessed"}
            ).status_code
            == 401
        )
        metrics = http.get(
            "/metrics", headers={**remote, "Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert metrics.status_code == 200
        admin_headers = {**remote, "Authorization": f"Bearer {admin_token}"}
        rotated = http.post(f"/api/devices/{phone.id}/rotate", headers=admin_headers).json()
        secrets.append(rotated["deviceToken"])
        invite = http.post("/api/invites", headers=admin_headers, json={"role": "user"}).json()
        secrets.append(invite["code"])
    invited = _handshake(server, Device("invited"), {"invite": invite["code"]}, **remote)
    assert invited["type"] == "hello"
    secrets.append(invited["deviceToken"])

    server.stop()
    log = server.log()
    assert '"path": "/api/whoami"' in log or '"path":"/api/whoami"' in log  # the access log ran
    for secret in secrets:
        assert secret not in log


def _slices(secret: str, width: int = 8) -> set[str]:
    """Every ``width``-character piece of ``secret``: a prefix leak is a leak too."""
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return sorted(
        f"{what}: {piece!r}"
        for what, secret in secrets.items()
        for piece in _slices(secret)
        if piece in text
    )


@pytest.mark.integration
def test_no_slice_of_any_secret_reaches_a_log_line_a_metric_or_a_response(
    edge_server_factory: Callable[..., EdgeServer],
) -> None:
    """``logging.level: debug``: uvicorn's protocol loggers would quote headers and frames.

    Every secret is random here, so an 8-character piece of one in a log line,
    in the metrics or in a response that does not issue it is a leak, not chance.
    """
    from edge.pairing.tokens import generate_secret

    gateway_token, metrics_token, webhook_secret = (generate_secret() for _ in range(3))
    hook_port = free_port()  # nobody listens: deliveries fail and are logged
    server = edge_server_factory(
        {
            "auth": {"token": gateway_token},
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "metrics": {"bearer_token": metrics_token},
            "logging": {"level": "debug", "format": "text", "access_log": True},
            "notify": {
                "webhooks": [
                    {"url": f"http://127.0.0.1:{hook_port}/hook", "secret": webhook_secret}
                ]
            },
        }
    )
    remote = {"X-Forwarded-For": "198.51.100.20"}
    secrets = {"gateway token": gateway_token, "metrics token": metrics_token}
    secrets["webhook secret"] = webhook_secret
    bodies: list[str] = []  # responses that issue no secret
    admin = Device("admin laptop")
    admin_token = _handshake(server, admin, {})["deviceToken"]
    secrets["admin device token"] = admin_token
    phone = Device("phone")
    asked = _handshake(server, phone, {"token": gateway_token}, **remote)
    server.cli("devices", "approve", asked["requestId"])
    phone_token = _handshake(server, phone, {"token": gateway_token}, **remote)["deviceToken"]
    secrets["phone device token"] = phone_token
    cookie = {**remote, "Cookie": f"edge_session={phone_token}"}
    assert _handshake(server, phone, {}, **cookie)["type"] in ("hello", "closed")
    assert (
        _handshake(server, Device(), {"token": "x" + gateway_token}, **remote)["type"] == "closed"
    )
    with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as http:
        bearer = {**remote, "Authorization": f"Bearer {phone_token}"}
        admin_bearer = {**remote, "Authorization": f"Bearer {admin_token}"}
        for response in (
            http.get("/api/whoami", headers=bearer),
            http.post("/api/session", headers=bearer),
            http.get("/api/whoami", headers=cookie),
            http.post("/api/session", headers={**cookie, "Origin": "http://evil.example"}),
            http.get("/api/devices", headers={**remote, "Authorization": f"Bearer {phone_token}x"}),
            http.get("/metrics", headers={**remote, "Authorization": f"Bearer {metrics_token}x"}),
            http.get("/api/devices", headers=admin_bearer),
        ):
            bodies.append(response.text)
            assert "set-cookie" not in response.headers or response.request.method == "POST"
        metrics = http.get(
            "/metrics", headers={**remote, "Authorization": f"Bearer {metrics_token}"}
        )
        assert metrics.status_code == 200
        bodies.append(metrics.text)
    server.stop()
    log = server.log()
    assert "GET /api/whoami" in log  # the access log ran
    assert _leaks(log, secrets) == []
    assert _leaks("\n".join(bodies), secrets) == []


# -- never in URLs --------------------------------------------------------------------------------

_TOKEN_IN_QUERY = re.compile(
    r"[?&](?:token|deviceToken|device_token|access_token|invite|code)=", re.I
)


def test_the_control_ui_never_puts_a_secret_in_a_url() -> None:
    for path in sorted((EDGE_DIR / "ui").glob("*.*")):
        text = path.read_text(encoding="utf-8")
        assert not _TOKEN_IN_QUERY.search(text), f"{path.name} builds a URL with a secret"
        assert "URLSearchParams" not in text, f"{path.name} reads or writes a query string"
        for line in text.splitlines():
            if "fetch(" in line:
                assert re.search(r"fetch\(\"/api/[a-z/]+\"", line), f"{path.name}: {line.strip()}"
    app_js = "".join(
        path.read_text(encoding="utf-8") for path in sorted((EDGE_DIR / "ui").glob("*.js"))
    )
    sockets = re.findall(r"new WebSocket\((\w+)\)", app_js)
    assert sockets == ["url"]
    assert re.search(r"const url = `[^`]*\$\{window\.location\.host\}/ws`;", app_js)


def test_the_cli_and_the_gateway_never_put_a_secret_in_a_query_string() -> None:
    for path in sorted(EDGE_DIR.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not _TOKEN_IN_QUERY.search(text), (
            f"{path.relative_to(EDGE_DIR)} puts a secret in a URL"
        )
    # Invite links carry the code in the fragment, which browsers never send to a server.
    assert (
        invite_url("https://edge.example.com/", "CODE") == "https://edge.example.com/#invite=CODE"
    )


@pytest.fixture
def app(tmp_path: Path) -> Any:
    return create_app(base_config(tmp_path, logging={"level": "warning"}))


def _pair_local(app: Any, device: Device) -> str:
    with client_for(app, LOOPBACK, "http://localhost:18789") as client, open_ws(client) as ws:
        hello = device.handshake(ws, {}, "admin")
    assert hello["type"] == "hello"
    return str(hello["deviceToken"])


@pytest.mark.parametrize("name", ["token", "deviceToken", "access_token", "session"])
def test_a_token_in_the_query_string_is_ignored(app: Any, name: str) -> None:
    token = _pair_local(app, Device())
    with client_for(app, REMOTE) as client:
        answer = client.get(f"/api/devices?{name}={token}")
        whoami = client.get(f"/api/whoami?{name}={token}").json()
    assert answer.status_code == 401
    assert whoami["auth"]["state"] == "anonymous"


def test_a_gateway_token_in_the_socket_url_is_ignored(app: Any) -> None:
    device = Device()
    with client_for(app, REMOTE) as client:
        url = f"/ws?token={GATEWAY_TOKEN}&auth={GATEWAY_TOKEN}"
        with client.websocket_connect(url, headers={"host": "edge.example.com"}) as ws:
            challenge = ws.receive_json()
            ws.send_json(device.connect_frame(challenge["nonce"], {}, "user"))
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
    assert closed.value.reason == "unauthorized: gateway token missing"


# -- stored hashed, in private files ------------------------------------------------------------------


def test_the_store_keeps_hashes_never_the_secrets(app: Any, tmp_path: Path) -> None:
    token = _pair_local(app, Device())
    gateway = app.state.gateway
    _invite, code = gateway.service.create_invite(
        role=edge.pairing.models.Role.USER, name=None, ttl=60, actor="test"
    )
    rotated = gateway.service.rotate_token(gateway.service.list_devices()[0].id, actor="test")
    store_bytes = b"".join(
        path.read_bytes()
        for path in (tmp_path / "data").iterdir()
        if path.is_file() and path.name.startswith("edge.sqlite3")
    )
    assert hashlib.sha256(rotated.encode()).hexdigest().encode() in store_bytes
    for secret in (token, rotated, code, GATEWAY_TOKEN):
        assert secret.encode() not in store_bytes


def test_the_data_dir_and_every_file_in_it_are_private(app: Any, tmp_path: Path) -> None:
    _pair_local(app, Device())
    data_dir = tmp_path / "data"
    entries = [data_dir, *data_dir.rglob("*")]
    assert len(entries) > 2
    for entry in entries:
        mode = stat.S_IMODE(entry.stat().st_mode)
        assert mode == (0o700 if entry.is_dir() else 0o600), f"{entry} has mode {mode:o}"
    key_file = tmp_path / "pair" / "device.key"
    DeviceKey.generate().save(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


# -- compared in constant time ------------------------------------------------------------------------


@pytest.fixture
def compared(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every pair of values that goes through ``hmac.compare_digest`` during the test."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_secrets_equal_is_hmac_compare_digest(compared: list[tuple[bytes, bytes]]) -> None:
    assert secrets_equal("abc", "abc") and not secrets_equal("abc", "abd")
    assert compared == [(b"abc", b"abc"), (b"abc", b"abd")]


def test_the_gateway_token_is_checked_in_constant_time(
    app: Any, compared: list[tuple[bytes, bytes]]
) -> None:
    guess = "x" * len(GATEWAY_TOKEN)
    with client_for(app, REMOTE) as client, open_ws(client) as ws:
        challenge = ws.receive_json()
        ws.send_json(Device().connect_frame(challenge["nonce"], {"token": guess}, "user"))
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    assert (guess.encode(), GATEWAY_TOKEN.encode()) in compared


def test_the_metrics_bearer_token_is_checked_in_constant_time(
    tmp_path: Path, compared: list[tuple[bytes, bytes]]
) -> None:
    app = create_app(base_config(tmp_path, metrics={"bearer_token": METRICS_TOKEN}))
    guess = "y" * len(METRICS_TOKEN)
    with client_for(app, REMOTE) as client:
        assert (
            client.get("/metrics", headers={"authorization": f"Bearer {guess}"}).status_code == 401
        )
        assert (
            client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).status_code
            == 200
        )
    assert (guess.encode(), METRICS_TOKEN.encode()) in compared
    assert (METRICS_TOKEN.encode(), METRICS_TOKEN.encode()) in compared


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript | ast.Call):
        return _name(node.value if isinstance(node, ast.Subscript) else node.func)
    return ""


def _root(node: ast.AST) -> str:
    """The variable an expression starts from (``secret`` in ``secret.strip()``)."""
    while isinstance(node, ast.Attribute | ast.Call | ast.Subscript):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else ""


def test_no_secret_is_compared_with_equals_anywhere_in_edge() -> None:
    """Secrets go through secrets_equal; only their SHA-256 hashes may meet ``==``.

    A timing difference on a hash tells an attacker nothing about a preimage.
    """
    found = []
    for path in sorted(EDGE_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) for side in sides):
                continue
            if len({_root(side) for side in sides}) == 1:
                continue  # a value checked against itself (``secret != secret.strip()``)
            names = {_name(side).lower() for side in sides}
            secret = [n for n in names if ("token" in n or "secret" in n) and "hash" not in n]
            if secret and len(names) > 1:
                found.append(f"{path.relative_to(EDGE_DIR)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []

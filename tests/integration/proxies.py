"""Real proxies and a real upstream on loopback, started from the shipped ``deploy/`` files.

nginx gets a private copy of ``deploy/nginx`` with only ports and paths
replaced (listen ports, the Edge and app upstream ports, pid/log/temp paths,
certificate paths) and runs in the foreground (``-g 'daemon off;'``). Caddy
runs the shipped ``deploy/caddy/Caddyfile`` unchanged: its ports and addresses
come from environment placeholders. ``upstream_app`` is the small service
behind them all (echo, slow, streamed and redirecting answers, a WebSocket
echo), run by uvicorn in a process or, for the in-process tests, in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.sync.client import connect as ws_connect

from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import free_port, stop_process, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# -- the upstream app -------------------------------------------------------------------

_inflight = {"count": 0}


async def _echo(request: Request) -> Response:
    """Describe the request; query parameters ask for delays, streams, statuses, redirects."""
    params = request.query_params
    _inflight["count"] += 1
    try:
        if "delay" in params:
            await asyncio.sleep(float(params["delay"]))
        body = await request.body()
    finally:
        _inflight["count"] -= 1
    if "chunks" in params:
        count = int(params["chunks"])

        async def chunks() -> Any:
            for index in range(count):
                yield f"chunk {index}\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")
    if "redirect" in params:
        return RedirectResponse(
            f"http://{request.headers.get('host')}{params['redirect']}", status_code=302
        )
    response = JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            # The query string exactly as it arrived: older Starlette releases (0.44 among them) rebuild
            # request.url from the decoded path, so an encoded '?' in the path (c%3F) shifted
            # into the query there.
            "query": request.scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw],
            "body": body.decode("utf-8", "replace"),
            "body_length": len(body),
        },
        status_code=int(params.get("status", "200")),
    )
    if "set_cookie" in params:
        response.set_cookie("app_cookie", params["set_cookie"])
    if "set_cookie_named" in params:  # an upstream trying to set (or clear) someone else's cookie
        response.headers.append("set-cookie", f"{params['set_cookie_named']}=from-upstream; Path=/")
    if "connection_header" in params:
        # An upstream that names an end-to-end header in Connection: the gateway must drop it.
        response.headers["x-upstream-secret"] = "dropped"
        response.headers["connection"] = "x-upstream-secret"
    return response


async def _inflight_count(request: Request) -> Response:
    return JSONResponse({"inflight": _inflight["count"]})


async def _ws_echo(websocket: WebSocket) -> None:
    """Echo frames. ``headers`` answers the handshake headers; ``close:CODE:REASON`` closes."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await websocket.send_bytes(message.get("bytes") or b"")
            elif text == "headers":
                await websocket.send_text(
                    json.dumps([[k.decode(), v.decode()] for k, v in websocket.scope["headers"]])
                )
            elif text.startswith("close:"):
                _, code, reason = text.split(":", 2)
                await websocket.close(int(code), reason)
                return
            else:
                await websocket.send_text(text)
    except WebSocketDisconnect:
        return


upstream_app = Starlette(
    routes=[
        Route("/_inflight", _inflight_count),
        WebSocketRoute("/{path:path}", _ws_echo),
        Route("/{path:path}", _echo, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
    ]
)


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    """Every value of one header, as the upstream saw it."""
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


class UvicornThread:
    """An ASGI app served by uvicorn in a thread on loopback (for in-process tests)."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.port = free_port(host)
        self.host = host
        config = uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        wait_for_port(self.port, self.host)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@dataclass
class Process:
    """A server process in its own session, stopped by ``stop``."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_upstream_process(directory: Path, port: int | None = None) -> Process:
    """``upstream_app`` under uvicorn in its own process (graceful-shutdown and proxy tests)."""
    port = port or free_port()
    log_path = directory / f"upstream-{port}.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.integration.proxies:upstream_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wait_for_port(port, proc=proc)
    return Process(proc, log_path, port)


# -- clients bound to another loopback address ---------------------------------------------


def client_from(address: str, **kwargs: Any) -> httpx.Client:
    """An HTTP client whose connections leave from ``address`` (e.g. 127.0.0.2)."""
    transport = httpx.HTTPTransport(local_address=address, verify=kwargs.pop("verify", True))
    return httpx.Client(transport=transport, trust_env=False, timeout=10, **kwargs)


def ws_from(address: str, url: str, **kwargs: Any) -> Any:
    """A real WebSocket client (``websockets``) connecting from ``address``."""
    return ws_connect(url, source_address=(address, 0), open_timeout=5, proxy=None, **kwargs)


def ws_handshake(
    ws: Any, device: Device, auth: dict[str, str], role: str = "user"
) -> dict[str, Any]:
    challenge = json.loads(ws.recv(timeout=5))
    assert challenge["type"] == "challenge"
    ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, role)))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    if reply.get("type") == "hello":
        device.token = reply["deviceToken"]
    return reply


def pair_through(
    ws_url: str, address: str, device: Device, approve: Callable[[str], Any], **kwargs: Any
) -> dict[str, Any]:
    """Ask with the gateway token, let ``approve(request_id)`` run, connect again: the hello."""
    with ws_from(address, ws_url, **kwargs) as ws:
        error = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert error["code"] == "PAIRING_REQUIRED", error
    approve(error["requestId"])
    with ws_from(address, ws_url, **kwargs) as ws:
        hello = ws_handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert hello["type"] == "hello", hello
    return hello


# -- TLS -------------------------------------------------------------------------------------


def self_signed(
    directory: Path, names: tuple[str, ...] = ("edge.example.com", "127.0.0.1")
) -> tuple[Path, Path]:
    """A throwaway certificate and key (PEM) for the proxies' TLS listeners."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "fullchain.pem"
    key_path = directory / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def tls_context(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly the test certificate."""
    context = ssl.create_default_context(cafile=str(cert))
    return context


# -- nginx -----------------------------------------------------------------------------------


def render(text: str, replacements: dict[str, str]) -> str:
    """Replace exact strings, refusing a replacement that no longer matches the shipped file."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"the shipped file no longer contains {old!r}; update the test")
        text = text.replace(old, new)
    return text


@dataclass
class Nginx:
    """nginx running the shipped configuration: ``https_port`` (Edge's site), ``http_port``."""

    prefix: Path
    https_port: int
    http_port: int
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def cert(self) -> Path:
        return self.prefix / "certs" / "fullchain.pem"

    def tls(self) -> ssl.SSLContext:
        return tls_context(self.cert)

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/ws"

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def nginx_files(
    prefix: Path, edge_port: int, app_port: int, https_port: int, http_port: int
) -> Path:
    """Copy ``deploy/nginx`` under ``prefix/conf`` with ports and paths replaced; the main file."""
    conf = prefix / "conf"
    shutil.copytree(DEPLOY / "nginx", conf)
    for name in ("logs", "temp", "certs"):
        (prefix / name).mkdir(exist_ok=True)
    cert, key = self_signed(prefix / "certs")
    main = conf / "nginx.conf"
    main.write_text(
        render(
            main.read_text(),
            {
                "user www-data;": f"user {getpass.getuser()};",
                "/run/nginx.pid": str(prefix / "nginx.pid"),
                "/var/log/nginx/": f"{prefix / 'logs'}/",
                "/var/lib/nginx/": f"{prefix / 'temp'}/",
            },
        )
    )
    site = conf / "conf.d" / "edge.conf"
    site.write_text(
        render(
            site.read_text(),
            {
                "server 127.0.0.1:18789": f"server 127.0.0.1:{edge_port}",
                "server 127.0.0.1:8080": f"server 127.0.0.1:{app_port}",
                "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
                "listen [::]:443 ssl;": f"listen [::1]:{https_port} ssl;",
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                "listen [::]:80;": f"listen [::1]:{http_port};",
                "/etc/letsencrypt/live/edge.example.com/fullchain.pem": str(cert),
                "/etc/letsencrypt/live/edge.example.com/privkey.pem": str(key),
            },
        )
    )
    return main


def start_nginx(prefix: Path, edge_port: int, app_port: int) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    nginx = Nginx(prefix, https_port=free_port(), http_port=free_port())
    main = nginx_files(prefix, edge_port, app_port, nginx.https_port, nginx.http_port)
    test = subprocess.run(
        ["nginx", "-t", "-p", str(prefix), "-c", str(main), "-g", "daemon off;"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if test.returncode != 0:
        raise AssertionError(f"nginx -t refused the shipped configuration:\n{test.stderr}")
    log_path = prefix / "logs" / "stderr.log"
    proc = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(main), "-g", "daemon off;"],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    nginx.process = Process(proc, log_path, nginx.https_port)
    wait_for_port(nginx.https_port, proc=proc)
    return nginx


# -- HAProxy -----------------------------------------------------------------------------------


@dataclass
class HAProxy:
    prefix: Path
    https_port: int
    http_port: int
    process: Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/ws"

    def tls(self) -> ssl.SSLContext:
        return tls_context(self.prefix / "certs" / "fullchain.pem")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def start_haproxy(prefix: Path, edge_port: int) -> HAProxy:
    """HAProxy on the shipped ``deploy/haproxy/haproxy.cfg``, ports and paths replaced."""
    prefix.mkdir(parents=True, exist_ok=True)
    haproxy = HAProxy(prefix, https_port=free_port(), http_port=free_port())
    cert, key = self_signed(prefix / "certs")
    bundle = prefix / "certs" / "bundle.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    config = prefix / "haproxy.cfg"
    config.write_text(
        render(
            (DEPLOY / "haproxy" / "haproxy.cfg").read_text(),
            {
                "log /dev/log local0": "log stderr format raw local0",
                "bind :443 ssl crt /etc/haproxy/certs/edge.example.com.pem": (
                    f"bind 127.0.0.1:{haproxy.https_port} ssl crt {bundle}"
                ),
                "bind :80": f"bind 127.0.0.1:{haproxy.http_port}",
                "server edge 127.0.0.1:18789": f"server edge 127.0.0.1:{edge_port}",
            },
        )
    )
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    if check.returncode != 0:
        raise AssertionError(
            f"haproxy -c refused the shipped configuration:\n{check.stdout}{check.stderr}"
        )
    log_path = prefix / "haproxy.log"
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    haproxy.process = Process(proc, log_path, haproxy.https_port)
    wait_for_port(haproxy.https_port, proc=proc)
    return haproxy


# -- Caddy -----------------------------------------------------------------------------------


@dataclass
class Caddy:
    port: int
    admin_port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.process.stop()


def caddy_env(
    home: Path, port: int, admin_port: int, edge_port: int, app_port: int
) -> dict[str, str]:
    """The placeholders of the shipped Caddyfile: plain HTTP on loopback, ports of the test."""
    for name in ("data", "config"):
        (home / name).mkdir(parents=True, exist_ok=True)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "HTTP", "http"))},
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "EDGE_SITE": f"http://127.0.0.1:{port}",
        "EDGE_UPSTREAM": f"127.0.0.1:{edge_port}",
        "EDGE_APP_UPSTREAM": f"127.0.0.1:{app_port}",
        "EDGE_CADDY_ADMIN": f"127.0.0.1:{admin_port}",
    }


def start_caddy(home: Path, edge_port: int, app_port: int) -> Caddy:
    port, admin_port = free_port(), free_port()
    env = caddy_env(home, port, admin_port, edge_port, app_port)
    caddyfile = DEPLOY / "caddy" / "Caddyfile"
    log_path = home / "caddy.log"
    proc = subprocess.Popen(
        ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    process = Process(proc, log_path, port)
    try:
        wait_for_port(port, proc=proc)
    except (RuntimeError, TimeoutError) as exc:
        process.stop()
        raise AssertionError(f"caddy did not start: {exc}\n{process.log()}") from None
    return Caddy(port, admin_port, process)


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    """Stop every server given (anything with ``stop()``) when the block ends."""
    try:
        yield
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):
                server.stop()


def terminate(process: Process, sig: int = signal.SIGTERM) -> None:
    stop_process(process.proc, sig)


def raw_request(
    address: str,
    port: int,
    target: str,
    headers: list[tuple[str, str]] = [],  # noqa: B006 - read only
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> tuple[int, dict[str, Any] | None]:
    """One GET written byte for byte (no client tidies the path), from ``address``: status, JSON."""
    import socket

    sock = socket.create_connection((host, port), timeout=10, source_address=(address, 0))
    stream: Any = tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock
    try:
        lines = [f"GET {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
        if not any(k.lower() == "host" for k, _ in headers):
            lines.insert(1, f"Host: {host}:{port}")
        stream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := stream.recv(65536):
            data += chunk
    finally:
        stream.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2 :]
        body = decoded
    try:
        return status, json.loads(body) if body.strip() else None
    except ValueError:
        return status, None

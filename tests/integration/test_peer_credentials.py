"""Peer credentials against a real ``edge serve`` (default ``local.peer_check: uid``).

Edge runs as this test's user (root). Its own user's clients are local at once;
everything that reaches it through another user's process is not, whatever
the address: a bare nginx ``proxy_pass`` whose workers run as ``nobody`` (no
forwarding header, Host rewritten to Edge's own address), HAProxy without
``option forwardfor`` run as ``nobody``, a plain TCP forwarder run as
``nobody``, and a client process of ``nobody`` itself. Each of those set-ups
made every visitor a local admin before the peer check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.conftest import Device
from tests.integration.conftest import EdgeServer, free_port, stop_process, wait_for_port
from tests.integration.proxies import ws_handshake

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("runuser") is None,
        reason="needs root (to run proxies as nobody) and runuser",
    ),
]

NOBODY = "nobody"


@pytest.fixture
def edge(edge_server_factory: Callable[..., EdgeServer]) -> EdgeServer:
    """``edge serve`` with the defaults that matter here: no trusted proxy, peer_check uid."""
    server = edge_server_factory()
    assert "local.peer_check" not in server.config_path.read_text()
    return server


def lookups(client: httpx.Client, url: str) -> float:
    """``edge_peer_lookups_total`` over every owner, read through ``client``'s connection."""
    text = client.get(f"{url}/metrics").text
    return sum(
        float(value)
        for value in re.findall(r'^edge_peer_lookups_total\{owner="[^"]+"\} (\S+)$', text, re.M)
    )


# -- the person at the keyboard ----------------------------------------------------------------


def test_a_local_client_of_the_gateways_own_user_is_an_admin_straight_away(edge: EdgeServer) -> None:
    with httpx.Client(base_url=edge.url, trust_env=False, timeout=10) as client:
        whoami = client.get("/api/whoami").json()
        devices = client.get("/api/devices")
        invite = client.post("/api/invites", json={"role": "user"})
    assert whoami["local"] is True and whoami["auth"]["state"] == "local"
    assert whoami["peerCheck"] == "uid"
    assert whoami["peer"]["owner"] == "same-user" and whoami["peer"]["uid"] == os.geteuid()
    assert whoami["peer"]["foundBy"] == "sock_diag"
    assert "edge's own user" in whoami["localRule"]
    assert devices.status_code == 200
    assert invite.status_code == 200, invite.text
    device = Device("the operator's CLI")
    with ws_connect(edge.ws_url, open_timeout=30, proxy=None) as ws:
        hello = ws_handshake(ws, device, {}, role="admin")
    assert hello["type"] == "hello" and hello["device"]["role"] == "admin"
    assert hello["client"]["local"] is True


def test_the_owner_is_looked_up_once_per_connection_not_per_request(edge: EdgeServer) -> None:
    with httpx.Client(base_url=edge.url, trust_env=False, timeout=10) as meter:
        before = lookups(meter, edge.url)
        with httpx.Client(base_url=edge.url, trust_env=False, timeout=10) as client:
            answers = [client.get("/api/whoami").json() for _ in range(25)]
        after = lookups(meter, edge.url)
    ports = {answer["peer"]["port"] for answer in answers}
    assert len(ports) == 1, "the 25 requests must share one keep-alive connection"
    assert all(answer["local"] for answer in answers)
    assert after - before == 1


def test_the_start_up_log_says_which_rule_is_in_force(edge: EdgeServer) -> None:
    log = edge.log()
    assert "local.peer_check: uid: a loopback client is local only if its connection belongs to " in log
    assert "checked with sock_diag" in log


# -- another user's process on the same host ---------------------------------------------------


def run_as_nobody(script: str) -> str:
    result = subprocess.run(
        ["runuser", "-u", NOBODY, "--", "/usr/bin/python3", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_a_client_process_of_another_user_is_not_local(edge: EdgeServer) -> None:
    script = textwrap.dedent(
        f"""
        import json, urllib.request, urllib.error
        out = {{"whoami": json.load(urllib.request.urlopen("{edge.url}/api/whoami"))}}
        for method, path in (("GET", "/api/devices"), ("POST", "/api/invites")):
            request = urllib.request.Request("{edge.url}" + path, method=method, data=b"{{}}" if method == "POST" else None, headers={{"content-type": "application/json"}})
            try:
                out[path] = urllib.request.urlopen(request).status
            except urllib.error.HTTPError as exc:
                out[path] = exc.code
        print(json.dumps(out))
        """
    )
    out = json.loads(run_as_nobody(script))
    whoami = out["whoami"]
    assert whoami["local"] is False and whoami["auth"]["state"] == "anonymous"
    assert whoami["peer"]["user"] == NOBODY and whoami["peer"]["owner"] == "other-user"
    assert "the connection belongs to user nobody (uid 65534), not to edge's user root" in whoami["localRule"]
    assert out["/api/devices"] == 401 and out["/api/invites"] == 401


# -- same-host proxies and forwarders running as another user --------------------------------


@dataclass
class Forwarder:
    """A proxy or forwarder in front of Edge, listening on ``port``."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _spawn(argv: list[str], port: int, log_path: Path) -> Forwarder:
    proc = subprocess.Popen(
        argv, stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    wait_for_port(port, proc=proc)
    return Forwarder(port, proc, log_path)


def _scratch() -> Path:
    """A directory ``nobody`` may write (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="edge-peer-"))
    directory.chmod(0o755)
    return directory


def bare_nginx(edge_port: int) -> Iterator[Forwarder]:
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed")
    directory = _scratch()
    port = free_port()
    temp = directory / "temp"
    temp.mkdir(mode=0o777)
    temp.chmod(0o777)
    conf = directory / "nginx.conf"
    # The attack as reported: a location with nothing but proxy_pass (plus what a WebSocket
    # needs to pass at all); no forwarding header, and Host becomes 127.0.0.1:<edge port>.
    conf.write_text(
        textwrap.dedent(
            f"""
            user nobody nogroup;
            worker_processes 1;
            pid {directory}/nginx.pid;
            error_log {directory}/error.log;
            events {{ worker_connections 64; }}
            http {{
                access_log off;
                client_body_temp_path {temp}/body;
                proxy_temp_path {temp}/proxy;
                fastcgi_temp_path {temp}/fastcgi;
                uwsgi_temp_path {temp}/uwsgi;
                scgi_temp_path {temp}/scgi;
                map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
                server {{
                    listen 127.0.0.1:{port};
                    location /ws {{
                        proxy_pass http://127.0.0.1:{edge_port};
                        proxy_http_version 1.1;
                        proxy_set_header Upgrade $http_upgrade;
                        proxy_set_header Connection $connection_upgrade;
                    }}
                    location / {{ proxy_pass http://127.0.0.1:{edge_port}; }}
                }}
            }}
            """
        )
    )
    forwarder = _spawn(
        ["nginx", "-p", str(directory), "-c", str(conf), "-g", "daemon off;"],
        port,
        directory / "nginx.log",
    )
    try:
        yield forwarder
    finally:
        stop_process(forwarder.proc)
        shutil.rmtree(directory, ignore_errors=True)


def bare_haproxy(edge_port: int) -> Iterator[Forwarder]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed")
    directory = _scratch()
    port = free_port()
    conf = directory / "haproxy.cfg"
    # No `option forwardfor`: HAProxy adds no header at all.
    conf.write_text(
        textwrap.dedent(
            f"""
            global
                user nobody
                group nogroup
            defaults
                mode http
                timeout connect 5s
                timeout client 30s
                timeout server 30s
                timeout tunnel 30s
            frontend visitors
                bind 127.0.0.1:{port}
                default_backend edge
            backend edge
                server edge 127.0.0.1:{edge_port}
            """
        )
    )
    forwarder = _spawn(["haproxy", "-db", "-f", str(conf)], port, directory / "haproxy.log")
    try:
        yield forwarder
    finally:
        stop_process(forwarder.proc)
        shutil.rmtree(directory, ignore_errors=True)


TCP_FORWARDER = """
import socket, sys, threading
listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
def pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
server = socket.create_server(("127.0.0.1", listen_port))
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target_port))
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
"""


def tcp_forwarder(edge_port: int) -> Iterator[Forwarder]:
    directory = _scratch()
    port = free_port()
    forwarder = _spawn(
        [
            "runuser", "-u", NOBODY, "--", "/usr/bin/python3", "-c", TCP_FORWARDER,
            str(port), str(edge_port),
        ],
        port,
        directory / "forwarder.log",
    )
    try:
        yield forwarder
    finally:
        stop_process(forwarder.proc)
        shutil.rmtree(directory, ignore_errors=True)


FORWARDERS = {"nginx-bare-proxy-pass": bare_nginx, "haproxy-without-forwardfor": bare_haproxy, "tcp-forwarder": tcp_forwarder}


@pytest.fixture(params=sorted(FORWARDERS))
def forwarded(request: Any, edge: EdgeServer) -> Iterator[tuple[EdgeServer, Forwarder]]:
    for forwarder in FORWARDERS[request.param](edge.port):
        yield edge, forwarder


def test_a_same_host_proxy_of_another_user_makes_no_visitor_local(
    forwarded: tuple[EdgeServer, Forwarder],
) -> None:
    _, forwarder = forwarded
    with httpx.Client(base_url=forwarder.url, trust_env=False, timeout=10) as visitor:
        whoami = visitor.get("/api/whoami").json()
        devices = visitor.get("/api/devices")
        invite = visitor.post("/api/invites", json={"role": "admin"})
        requests = visitor.get("/api/requests")
    assert whoami["anomalies"] == [] and whoami["trustedPeer"] is False
    assert whoami["local"] is False, whoami["localRule"]
    assert whoami["auth"]["state"] == "anonymous"
    assert whoami["peer"]["user"] == NOBODY and whoami["peer"]["owner"] == "other-user"
    assert "belongs to user nobody (uid 65534), not to edge's user root" in whoami["localRule"]
    for refused in (devices, invite, requests):
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "pairing_required"


def test_a_same_host_proxy_of_another_user_gets_no_auto_approved_socket(
    forwarded: tuple[EdgeServer, Forwarder],
) -> None:
    edge, forwarder = forwarded
    device = Device("visitor through the proxy")
    url = f"ws://127.0.0.1:{forwarder.port}/ws"
    with ws_connect(url, open_timeout=10, proxy=None) as ws, pytest.raises(ConnectionClosed) as closed:
        ws_handshake(ws, device, {}, role="admin")
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "unauthorized: gateway token missing"
    listed = edge.cli("devices", "list", "--json")
    assert device.id not in listed.stdout

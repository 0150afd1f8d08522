"""Several gateway replicas on one real Redis, and the Redis store on its own.

Every test that runs gateways starts its own ``redis-server`` (loopback, free
port, append-only file in the test's directory) and two ``edge serve``
processes with separate data directories: they share nothing but Redis.
Deadlines are receive timeouts (a missed deadline is a ``TimeoutError``), not
measured durations.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from edge.gateway.protocol import connect_attempt
from edge.pairing.models import PairingRequest, Role
from edge.pairing.service import Admitted, Denied, PairingService
from edge.pairing.store import (
    EVENT_LOG_MAX_EVENTS,
    RESOLVED_RETENTION,
    SnapshotStore,
    StoreError,
    open_store,
)
from edge.pairing.store.redis import RedisStore, parse_redis_url
from tests.conftest import GATEWAY_TOKEN, Device
from tests.integration.conftest import EdgeServer
from tests.redis_server import RedisServer, shared_redis_server, stop_shared_redis_server  # noqa: F401

pytestmark = pytest.mark.integration

PASSWORD = "redis-s3cret-for-tests"
LOCKOUT_AFTER = 6
Replicas = Callable[..., tuple[EdgeServer, EdgeServer]]


# -- helpers -------------------------------------------------------------------------------------


def forwarded(ip: str = "198.51.100.4") -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def handshake(
    ws: ClientConnection, device: Device, auth: dict[str, str], role: str = "user"
) -> dict[str, Any]:
    challenge = json.loads(ws.recv(timeout=5))
    ws.send(json.dumps(device.connect_frame(challenge["nonce"], auth, role)))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=5))
    if reply.get("type") == "hello":
        device.token = reply["deviceToken"]
    return reply


def attempt(server: EdgeServer, device: Device, auth: dict[str, str], ip: str) -> str:
    """One connect from ``ip``: ``hello``, or the close reason of a refusal."""
    with connect(server.ws_url, additional_headers=forwarded(ip)) as ws:
        try:
            reply = handshake(ws, device, auth)
            if reply["type"] != "error":
                return str(reply["type"])
            ws.recv(timeout=5)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.reason
    raise AssertionError(f"{server.url} neither admitted nor closed: {reply}")


def request_pairing(server: EdgeServer, device: Device, ip: str = "198.51.100.4") -> str:
    with connect(server.ws_url, additional_headers=forwarded(ip)) as ws:
        reply = handshake(ws, device, {"token": GATEWAY_TOKEN})
    assert reply["code"] == "PAIRING_REQUIRED", reply
    return str(reply["requestId"])


def approve(server: EdgeServer, request_id: str) -> httpx.Response:
    """Approve through the replica's REST API as a local operator."""
    return httpx.post(f"{server.url}/api/requests/{request_id}/approve", json={}, timeout=10)


def wait_closed(ws: ClientConnection, seconds: float) -> tuple[int, str]:
    deadline = time.monotonic() + seconds
    with pytest.raises(ConnectionClosed) as info:
        while True:  # events may arrive first; a TimeoutError means the deadline was missed
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert info.value.rcvd is not None
    return info.value.rcvd.code, info.value.rcvd.reason


def assert_stays_open(ws: ClientConnection, seconds: float) -> None:
    """The socket is not closed within ``seconds``; event frames may arrive meanwhile.

    The device's own ``device.token_rotated`` from its handshake reaches its socket
    or not, depending on whether the event watcher ran before the socket was admitted.
    """
    deadline = time.monotonic() + seconds
    with pytest.raises(TimeoutError):
        while True:
            frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            assert frame.get("type") == "event", frame


def next_event(ws: ClientConnection, event: str, seconds: float) -> dict[str, Any]:
    """The next ``event`` frame on an admin socket, within ``seconds`` (else TimeoutError)."""
    deadline = time.monotonic() + seconds
    while True:
        frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame.get("type") == "event" and frame["event"] == event:
            return dict(frame["data"])


@pytest.fixture
def admin_socket() -> Iterator[Callable[[EdgeServer], ClientConnection]]:
    """A dashboard of a local operator (loopback, no proxy headers: admin) on a replica."""
    with contextlib.ExitStack() as stack:

        def _open(server: EdgeServer) -> ClientConnection:
            ws = stack.enter_context(connect(server.ws_url))
            assert handshake(ws, Device("operator"), {}, role="admin")["type"] == "hello"
            return ws

        yield _open


def wait_store_up(servers: tuple[EdgeServer, ...], value: int, seconds: float = 30) -> None:
    """Poll ``/metrics`` of every server until ``edge_store_up`` reads ``value``."""
    pattern = re.compile(rf"^edge_store_up {value}\.0$", re.MULTILINE)
    deadline = time.monotonic() + seconds
    for server in servers:
        while not pattern.search(httpx.get(f"{server.url}/metrics", timeout=5).text):
            if time.monotonic() > deadline:
                raise AssertionError(f"{server.url}: edge_store_up never read {value}")
            time.sleep(0.1)


def wait_ready(servers: tuple[EdgeServer, ...], status: int, seconds: float = 30) -> None:
    """Poll ``/readyz`` of every server until it answers ``status``."""
    deadline = time.monotonic() + seconds
    waiting = list(servers)
    while waiting:
        server = waiting[0]
        try:
            answered = httpx.get(f"{server.url}/readyz", timeout=5).status_code
        except httpx.HTTPError:
            answered = -1
        if answered == status:
            waiting.pop(0)
        elif time.monotonic() > deadline:
            raise AssertionError(f"{server.url}/readyz never answered {status}:\n{server.log()}")
        else:
            time.sleep(0.1)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Redis for one test, fsyncing every write: an acknowledged write is on disk."""
    server = RedisServer(tmp_path / "redis", appendfsync="always", password=PASSWORD)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def replicas(edge_server_factory: Callable[..., EdgeServer], redis_server: RedisServer) -> Replicas:
    def _start(**overrides: Any) -> tuple[EdgeServer, EdgeServer]:
        config = {
            "proxy": {"trusted_proxies": ["127.0.0.1"]},
            "store": {"url": redis_server.url()},
            **overrides,
        }
        return edge_server_factory(config, name="a"), edge_server_factory(config, name="b")

    return _start


# -- replicas ------------------------------------------------------------------------------------


def test_pair_through_one_replica_connect_through_the_other(
    replicas: Replicas, admin_socket: Callable[[EdgeServer], ClientConnection]
) -> None:
    a, b = replicas()
    dashboard_b = admin_socket(b)
    device = Device("laptop")
    request_id = request_pairing(a, device)
    assert next_event(dashboard_b, "pairing.requested", 1.0)["requestId"] == request_id
    listed = httpx.get(f"{b.url}/api/devices", timeout=10).json()
    assert [r["id"] for r in listed["requests"]] == [request_id]
    assert approve(a, request_id).status_code == 200
    resolved = next_event(dashboard_b, "pairing.resolved", 1.0)
    assert (resolved["requestId"], resolved["decision"]) == (request_id, "approved")
    with connect(b.ws_url, additional_headers=forwarded()) as ws:
        assert handshake(ws, device, {"token": GATEWAY_TOKEN})["type"] == "hello"
    assert device.token is not None
    whoami = httpx.get(
        f"{a.url}/api/whoami",
        headers={"authorization": f"Bearer {device.token}", **forwarded()},
        timeout=10,
    ).json()
    assert whoami["auth"]["state"] == "paired" and whoami["auth"]["device"]["id"] == device.id


def test_rejection_on_one_replica_reaches_the_other_dashboard(
    replicas: Replicas, admin_socket: Callable[[EdgeServer], ClientConnection]
) -> None:
    a, b = replicas()
    dashboard_a = admin_socket(a)
    request_id = request_pairing(a, Device("stranger"))
    httpx.post(f"{b.url}/api/requests/{request_id}/reject", json={}, timeout=10).raise_for_status()
    resolved = next_event(dashboard_a, "pairing.resolved", 1.0)
    assert (resolved["requestId"], resolved["decision"]) == (request_id, "rejected")


def test_revocation_from_the_cli_closes_sockets_on_both_replicas_within_a_second(
    replicas: Replicas,
) -> None:
    a, b = replicas()
    device = Device("phone")
    assert approve(a, request_pairing(b, device)).status_code == 200
    with (
        connect(a.ws_url, additional_headers=forwarded()) as on_a,
        connect(b.ws_url, additional_headers=forwarded()) as on_b,
    ):
        assert handshake(on_a, device, {"token": GATEWAY_TOKEN})["type"] == "hello"
        assert device.token is not None
        assert handshake(on_b, device, {"deviceToken": device.token})["type"] == "hello"
        revoked = a.cli("devices", "revoke", device.id[:12])  # a third process, on Redis
        assert "revoked" in revoked.stdout
        assert wait_closed(on_a, 1.0) == (1008, "device revoked")
        assert wait_closed(on_b, 1.0) == (1008, "device revoked")
    assert attempt(b, device, {"deviceToken": device.token}, "198.51.100.4") == "device revoked"


def test_brute_force_spread_over_both_replicas_is_locked_out_as_one(
    replicas: Replicas, admin_socket: Callable[[EdgeServer], ClientConnection]
) -> None:
    rate_limit = {"failures": LOCKOUT_AFTER, "window": 60, "lockout": 300}
    a, b = replicas(auth={"token": GATEWAY_TOKEN, "rate_limit": rate_limit})
    dashboard_b = admin_socket(b)
    guesser, attacker_ip = Device("guesser"), "203.0.113.66"
    for number in range(LOCKOUT_AFTER):  # each replica sees only half of them
        server = (a, b)[number % 2]
        reason = attempt(server, guesser, {"token": f"guess-{number}"}, attacker_ip)
        assert reason == "unauthorized: gateway token mismatch"
    lockout = next_event(dashboard_b, "auth.lockout", 1.0)
    assert lockout["client"] == attacker_ip and lockout["failures"] == LOCKOUT_AFTER
    for server in (b, a):  # even the right token is refused now, on both
        reason = attempt(server, guesser, {"token": GATEWAY_TOKEN}, attacker_ip)
        assert reason == "unauthorized: too many failed attempts"
    other = attempt(a, Device("neighbour"), {"token": GATEWAY_TOKEN}, "203.0.113.67")
    assert other == "pairing required"


def test_redis_restart_loses_no_acknowledged_approval_and_replicas_recover(
    replicas: Replicas, redis_server: RedisServer
) -> None:
    a, b = replicas()
    veteran = Device("veteran")
    assert approve(a, request_pairing(a, veteran)).status_code == 200
    devices = [Device(f"device {n}") for n in range(6)]
    acknowledged = []
    for number, device in enumerate(devices):
        asked, approver = (a, b) if number % 2 else (b, a)
        response = approve(approver, request_pairing(asked, device, ip=f"198.51.100.{10 + number}"))
        assert response.status_code == 200, response.text
        acknowledged.append(device.id)
    waiting = Device("waiting")
    waiting_request = request_pairing(a, waiting)
    with connect(b.ws_url, additional_headers=forwarded()) as live:
        assert handshake(live, veteran, {"token": GATEWAY_TOKEN})["type"] == "hello"
        bearer = {"authorization": f"Bearer {veteran.token}", **forwarded()}
        assert httpx.get(f"{a.url}/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"

        wait_store_up((a, b), 1)
        redis_server.stop(signal.SIGKILL)
        wait_ready((a, b), 503)
        wait_store_up((a, b), 0)  # the outage is on the dashboards too
        # Verified sockets and recently verified tokens keep working ...
        assert_stays_open(live, 0.3)
        assert httpx.get(f"{a.url}/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"
        # ... new pairing decisions are refused, naming Redis but not its password.
        refused = b.cli("devices", "approve", waiting_request, check=False)
        assert refused.returncode != 0
        assert f"Redis store redis://127.0.0.1:{redis_server.port}/0" in refused.stderr
        assert "Redis is unreachable" in refused.stderr and PASSWORD not in refused.stderr
        # Still, once the store could not be asked about lockouts for a while (the CLI took
        # its time), the token verified before the outage is served from memory.
        assert httpx.get(f"{a.url}/api/whoami", headers=bearer).json()["auth"]["state"] == "paired"

        redis_server.start()  # same port, same directory: the append-only file is replayed
        wait_ready((a, b), 200)
        wait_store_up((a, b), 1)
        listing = json.loads(a.cli("devices", "list", "--json").stdout)
        assert {d["id"] for d in listing["devices"]} >= {veteran.id, *acknowledged}
        assert [r["id"] for r in listing["requests"]] == [waiting_request]
        for device in devices[:2]:
            assert attempt(b, device, {"token": GATEWAY_TOKEN}, "198.51.100.99") == "hello"
        httpx.post(f"{a.url}/api/devices/{veteran.id}/revoke", json={}, timeout=10)
        assert wait_closed(live, 1.0) == (1008, "device revoked")


def test_migration_round_trip_sqlite_redis_sqlite_keeps_every_device_and_request(
    edge_server_factory: Callable[..., EdgeServer], redis_server: RedisServer, tmp_path: Path
) -> None:
    proxied = {"proxy": {"trusted_proxies": ["127.0.0.1"]}}
    on_sqlite = edge_server_factory(proxied, name="sqlite")
    paired = [Device(f"paired {n}") for n in range(3)]
    for device in paired:
        on_sqlite.cli("devices", "approve", request_pairing(on_sqlite, device))
        assert attempt(on_sqlite, device, {"token": GATEWAY_TOKEN}, "198.51.100.4") == "hello"
    on_sqlite.cli("devices", "revoke", paired[2].id)
    pending = [
        request_pairing(on_sqlite, Device(f"pending {n}"), f"203.0.113.{n}") for n in range(2)
    ]
    on_sqlite.cli("devices", "reject", request_pairing(on_sqlite, Device("rejected")))
    on_sqlite.stop()
    first = open_store(None, on_sqlite.data_dir)
    assert isinstance(first, SnapshotStore)
    original = first.export_snapshot()
    first.close()

    migrated = on_sqlite.cli("store", "migrate", "--to", redis_server.url())
    assert "copied 3 devices (2 paired), 6 pairing requests (2 pending)" in migrated.stdout
    assert PASSWORD not in migrated.stdout + migrated.stderr
    back_path = tmp_path / "back.sqlite3"
    on_sqlite.cli(
        "store", "migrate", "--from", redis_server.url(), "--to", f"sqlite:///{back_path}"
    )
    back = open_store(f"sqlite:///{back_path}", tmp_path)
    assert isinstance(back, SnapshotStore)
    assert back.export_snapshot() == original
    back.close()

    on_redis = edge_server_factory({**proxied, "store": {"url": redis_server.url()}}, name="redis")
    for device in paired[:2]:
        assert device.token is not None
        assert attempt(on_redis, device, {"deviceToken": device.token}, "198.51.100.4") == "hello"
    assert attempt(on_redis, paired[2], {"deviceToken": str(paired[2].token)}, "198.51.100.4") == (
        "device revoked"
    )
    listing = json.loads(on_redis.cli("devices", "list", "--json").stdout)
    assert sorted(r["id"] for r in listing["requests"]) == sorted(pending)


# -- the Redis store on its own --------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"r{uuid.uuid4().hex[:16]}"
    yield name
    shared_redis_server().drop_prefix(name)


@pytest.fixture
def store(prefix: str) -> Iterator[RedisStore]:
    opened = RedisStore(shared_redis_server().url(prefix))
    yield opened
    opened.close()


def ask_to_pair(service: PairingService, device: Device) -> PairingRequest:
    outcome = service.connect(
        attempt=connect_attempt(device.connect_frame("n", {"token": GATEWAY_TOKEN})),
        nonce="n",
        client_ip="198.51.100.4",
        local=False,
        user_agent="pytest",
    )
    assert isinstance(outcome, Denied) and outcome.request is not None
    return outcome.request


def test_every_key_lives_under_the_prefix_and_prefixes_are_apart(prefix: str) -> None:
    server = shared_redis_server()
    store = RedisStore(server.url(prefix, db=7))  # a database of its own: every key is ours
    service = PairingService(store, GATEWAY_TOKEN)
    laptop = Device("laptop")
    service.approve(ask_to_pair(service, laptop).id, actor="cli")
    admitted = service.connect(
        attempt=connect_attempt(laptop.connect_frame("n", {"token": GATEWAY_TOKEN})),
        nonce="n",
        client_ip="198.51.100.4",
        local=False,
        user_agent="pytest",
    )
    assert isinstance(admitted, Admitted)  # now it holds a device token
    ask_to_pair(service, Device("waiting"))
    service.record_failure("203.0.113.5")
    service.create_invite(role=Role.USER, name=None, ttl=60, actor="cli")
    other = RedisStore(server.url(f"{prefix}-other", db=7))
    client = server.client(db=7)
    try:
        assert other.list_devices() == [] and other.latest_seq() == 0
        keys = list(client.scan_iter(match="*", count=1000))
        assert all(k.startswith((f"{prefix}:", f"{prefix}-other:")) for k in keys)
        kinds = {k.split(":")[1] for k in keys if k.startswith(f"{prefix}:")}
        assert kinds >= {"dev", "tok", "req", "pend", "pending", "inv", "invcode", "fail"}
        assert kinds >= {"devices", "invites", "seq", "events", "meta"}
    finally:
        store.close()
        other.close()
        client.flushdb()


def test_redis_expires_settled_requests_and_counters_by_itself(
    store: RedisStore, prefix: str
) -> None:
    client = shared_redis_server().client()
    service = PairingService(store, GATEWAY_TOKEN)
    device = Device("laptop")
    request = ask_to_pair(service, device)
    key = f"{prefix}:req:{request.id}"
    ttl = service.policy.request_ttl + RESOLVED_RETENTION
    assert (ttl - 60) * 1000 < client.pttl(key) <= ttl * 1000
    service.reject(request.id, actor="cli")
    assert (RESOLVED_RETENTION - 60) * 1000 < client.pttl(key) <= RESOLVED_RETENTION * 1000
    limit = service.policy.rate_limit
    for _ in range(limit.failures):
        service.record_failure("203.0.113.5")
    counter = client.pttl(f"{prefix}:fail:203.0.113.5")
    assert limit.lockout * 1000 < counter <= (limit.lockout + 60) * 1000
    assert client.pttl(f"{prefix}:dev:{'0' * 64}") == -2  # devices never expire by TTL


def test_a_replayed_commit_is_applied_once(store: RedisStore, prefix: str) -> None:
    from edge.pairing.store.redis_records import Plan  # the commit protocol itself

    backend = store.backend
    plan = Plan()
    plan.set(f"{prefix}:probe", "1")
    plan.event("probe.event", {"n": 1}, 1.0)
    argv = plan.argv(f"{prefix}:op:fixed", backend._keys)
    first = backend._commit_script(args=argv)
    again = backend._commit_script(args=argv)  # as redis-py resends after a lost reply
    assert first[0] == "ok" and again[0] == "replayed"
    assert [e.type for e in store.events_after(0)] == ["probe.event"]


def test_a_foreign_record_is_reported_not_crashed_on(store: RedisStore, prefix: str) -> None:
    shared_redis_server().client().set(f"{prefix}:dev:{'a' * 64}", "{not json")
    with pytest.raises(StoreError, match="holds a record Edge did not write"):
        store.get_device("a" * 64)


def test_keys_of_another_application_or_a_newer_edge_are_refused(prefix: str) -> None:
    client = shared_redis_server().client()
    client.hset(f"{prefix}:meta", mapping={"application": "cache", "schema": "1"})
    with pytest.raises(StoreError, match="belongs to 'cache', not Edge"):
        RedisStore(shared_redis_server().url(prefix))
    client.hset(f"{prefix}:meta", mapping={"application": "edge", "schema": "99"})
    with pytest.raises(StoreError, match="written by a newer Edge"):
        RedisStore(shared_redis_server().url(prefix))


def test_a_redis_that_lost_its_data_is_reported_not_silently_followed(
    store: RedisStore, prefix: str
) -> None:
    for n in range(3):
        store.record_failure("203.0.113.1", now=1.0 + n, window=60, threshold=1, lockout=0.5)
    seen = store.latest_seq()
    assert store.wait_events(seen, 0.05) == []
    shared_redis_server().drop_prefix(prefix)  # as a restart without persistence would
    store.record_failure("203.0.113.1", now=9.0, window=60, threshold=1, lockout=0.5)
    with pytest.raises(StoreError, match="event counter went back from 3 to 1, so Redis lost data"):
        store.wait_events(seen, 0.05)


def test_the_event_log_is_trimmed_to_its_bound_as_it_grows(store: RedisStore) -> None:
    for n in range(EVENT_LOG_MAX_EVENTS + 300):
        store.record_failure("203.0.113.1", now=1.0 + n, window=60, threshold=1, lockout=0.5)
    length = store.server_info().event_log_length
    assert EVENT_LOG_MAX_EVENTS <= length < EVENT_LOG_MAX_EVENTS + 300  # MAXLEN ~ on XADD
    assert store.latest_seq() == EVENT_LOG_MAX_EVENTS + 300


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://:pw@host:99999/0", "not a valid Redis URL"),
        ("redis://:pw@host/0?db=1", "database number is given twice"),
        ("redis://:pw@host/-1", "must be a number"),
        ("redis://:pw@host/0?prefix=a*b", "prefix 'a*b' must be"),
        ("redis://:pw@host/0?socket_timeout=0", "socket_timeout must be a number of seconds"),
        ("redis://:pw@host/0?retries=many", "retries must be a whole number"),
        ("redis://:pw@host/0?password=again", "password is given twice"),
        ("redis://:pw@host/0?ssl_cert_reqs=none", "needs TLS; use rediss://"),
        ("rediss://:pw@host/0?ssl_ca_certs=/nonexistent/ca.pem", "is not a readable file"),
        ("rediss://:pw@host/0?ssl_cert_reqs=maybe", "must be none, optional or required"),
        ("unix://:pw@host:6379/0", "names a socket file, not a host"),
        ("redis://:pw@host/0?a=1&a=2", "unknown option 'a'"),
        ("redis://:pw@host/0?timeout=", "unknown option 'timeout'"),
        ("redis://:pw@host/0?prefix=", "option 'prefix' has no value"),
    ],
)
def test_bad_redis_urls_name_the_problem_and_never_the_password(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as raised:
        parse_redis_url(url)
    assert "pw" not in str(raised.value).replace("password", "")


def test_good_redis_urls_become_connection_settings(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until connecting")
    tls = parse_redis_url(
        f"rediss://edge:p%40ss@redis.internal:6380/2?prefix=prod&ssl_ca_certs={ca}"
        "&ssl_check_hostname=false&socket_timeout=1.5&retries=5"
    )
    assert tls.display == "rediss://redis.internal:6380/2 (key prefix 'prod')"
    assert tls.prefix == "prod" and tls.retries == 5
    settings = dict(tls.connection)
    assert (settings["username"], settings["password"], settings["db"]) == ("edge", "p@ss", 2)
    assert settings["ssl"] is True and settings["ssl_ca_certs"] == str(ca)
    assert settings["ssl_check_hostname"] is False and settings["socket_timeout"] == 1.5
    unix = parse_redis_url("unix:///run/redis/redis.sock?db=3&password=x")
    assert unix.display == "unix:///run/redis/redis.sock/3" and unix.prefix == "edge"
    assert unix.connection["unix_socket_path"] == "/run/redis/redis.sock"
    assert parse_redis_url("redis://[::1]/0").display == "redis://[::1]:6379/0"


def test_docs_list_exactly_the_url_options_the_store_accepts() -> None:
    from edge.pairing.store.urls import _KNOWN_OPTIONS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "scaling.md").read_text()
    options = docs.split("Options go in the query string:", 1)[1].split("An\nunknown option")[0]
    values = {"edge", "none", "optional", "required", "true", "false"}  # defaults and choices
    assert set(re.findall(r"`([a-z_]+)`", options)) - values == _KNOWN_OPTIONS


def test_the_store_talks_tls_with_a_password_and_names_a_bad_certificate(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "tls-redis", password=PASSWORD, tls=True)
    server.start()
    try:
        url = server.url("tls")
        assert url.startswith("rediss://") and "ssl_ca_certs=" in url
        store = RedisStore(url)
        try:
            service = PairingService(store, GATEWAY_TOKEN)
            service.approve(ask_to_pair(service, Device("laptop")).id, actor="cli")
            assert [d.name for d in store.list_devices()] == ["laptop"]
            assert store.description == f"rediss://127.0.0.1:{server.port}/0 (key prefix 'tls')"
        finally:
            store.close()
        without_ca = url.split("&ssl_ca_certs=")[0]
        with pytest.raises(StoreError, match="the TLS handshake failed") as raised:
            RedisStore(without_ca)
        assert "check ssl_ca_certs" in str(raised.value) and PASSWORD not in str(raised.value)
        with pytest.raises(StoreError, match="refused the credentials"):
            RedisStore(url.replace(PASSWORD, "wrong-password"))
    finally:
        server.stop()

"""Webhook notifications: a real HTTP receiver on 127.0.0.1 gets each event once, signed.

The receiver is a tiny threaded HTTP server on a free loopback port; it can be
stopped and started again on the same port to play a receiver that is down.
Every wait is a deadline, never a duration that is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge import create_app
from edge.config import NOTIFIABLE_EVENTS, ConfigError, NotifySettings, load_settings
from edge.gateway.notify import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    claim_for_store,
    event_body,
    safe_url,
    sign,
    verify,
)
from edge.pairing.models import Event
from edge.pairing.store.claims import EventClaim
from tests.conftest import GATEWAY_TOKEN, LOOPBACK, REMOTE, Device, base_config, client_for, open_ws

SECRET = "webhook-secret-0123456789"
ALL_EVENTS = ["pairing.requested", "pairing.resolved", "device.revoked", "auth.lockout"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed_with(self, secret: str) -> bool:
        return verify(
            secret,
            timestamp=self.headers.get(TIMESTAMP_HEADER.lower()),
            signature=self.headers.get(SIGNATURE_HEADER.lower()),
            body=self.body,
            now=time.time(),
        )


class Receiver:
    """Records every POST and answers ``status``; ``stop``/``start`` keep the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status = 204
        self.location: str | None = None
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.received.append(Received(self.path, headers, body))
                self.send_response(receiver.status)
                if receiver.location:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def types(self) -> list[str]:
        return [r.json["type"] for r in self.events()]


def until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def async_until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def notify_settings(*webhooks: dict[str, Any], **extra: Any) -> NotifySettings:
    return load_settings({"notify": {"webhooks": list(webhooks), **extra}}).notify


def hook(receiver: Receiver, path: str = "/hook", **extra: Any) -> dict[str, Any]:
    return {"url": receiver.url(path), "secret": SECRET, **extra}


def event(seq: int, type_: str = "pairing.requested", **data: object) -> Event:
    return Event(seq=seq, type=type_, data={"device_id": "ab" * 32, **data}, at=1_700_000_000.0)


def fast(settings: NotifySettings, claim: Any = None) -> Notifier:
    return Notifier(settings, claim or EventClaim(None), backoff_base=0.02, backoff_cap=0.1)


# -- the wire format ------------------------------------------------------------------------------


def test_signature_covers_timestamp_and_body_and_verifies_in_constant_time() -> None:
    body = b'{"id":"evt_1_0"}'
    signature = sign(SECRET, 1700000000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    ok = {"timestamp": "1700000000", "signature": signature, "body": body, "now": 1700000010.0}
    assert verify(SECRET, **ok)
    assert not verify("another-secret-0123456", **ok)
    assert not verify(SECRET, **{**ok, "body": body + b" "})
    assert not verify(SECRET, **{**ok, "timestamp": "1700000001"})
    assert not verify(SECRET, **{**ok, "now": 1700000000.0 + 301})  # replayed later
    assert not verify(SECRET, **{**ok, "timestamp": None})
    assert not verify(SECRET, **{**ok, "timestamp": "-5"})


def test_payload_has_id_type_time_and_data_but_never_a_secret() -> None:
    raw = event(
        7,
        "device.revoked",
        name="kiosk",
        token_hash="h" * 64,
        device_token="t" * 43,
        secret_code="s",
        revoked_at=1_700_000_001.5,
    )
    payload = json.loads(event_body(raw))
    assert payload == {
        "id": "evt_7_1700000000000",
        "type": "device.revoked",
        "at": 1700000000000,
        "data": {"deviceId": "ab" * 32, "name": "kiosk", "revokedAt": 1700000001500},
    }


def test_logged_urls_lose_credentials_and_query() -> None:
    url = "https://user:pw@hooks.example.com:8443/in/abc?token=xyz"
    assert safe_url(url) == "https://hooks.example.com:8443/in/abc"


def test_unknown_or_missing_event_names_are_configuration_errors(tmp_path: Path) -> None:
    bad = {"url": "http://127.0.0.1:9/h", "secret": SECRET, "events": ["pairing.request"]}
    empty = {"url": "http://127.0.0.1:9/h", "secret": SECRET, "events": []}
    with pytest.raises(ConfigError) as info:
        create_app(base_config(tmp_path, notify={"webhooks": [bad, empty]}))
    assert info.value.problems[0].startswith(
        "notify.webhooks[0].events[0]: 'pairing.request' is not an event (one of: "
    )
    assert info.value.problems[1] == (
        "notify.webhooks[1].events: is empty, so this webhook would never be called"
    )


# -- delivery -------------------------------------------------------------------------------------


def test_each_event_reaches_its_webhooks_once_in_order_and_signed(receiver: Receiver) -> None:
    settings = notify_settings(
        hook(receiver, "/all"),
        hook(receiver, "/revoked", events=["device.revoked"], secret="other-secret-0123456789"),
    )
    events = [event(1), event(2, "pairing.resolved"), event(3, "device.revoked"), event(4)]

    async def scenario() -> None:
        notifier = fast(settings)
        await notifier.start()
        notifier.submit(events[:2])
        notifier.submit(events[2:])
        notifier.submit([event(5, "device.renamed")])  # no webhook asked for it
        await async_until(lambda: notifier.stats().delivered == 5, "five deliveries")
        await notifier.stop()

    asyncio.run(scenario())
    by_path: dict[str, list[Received]] = {}
    for received in receiver.events():
        by_path.setdefault(received.path, []).append(received)
    assert [r.json["id"] for r in by_path["/all"]] == [
        f"evt_{n}_1700000000000" for n in (1, 2, 3, 4)
    ]
    assert [r.json["type"] for r in by_path["/revoked"]] == ["device.revoked"]
    assert all(r.signed_with(SECRET) for r in by_path["/all"])
    assert by_path["/revoked"][0].signed_with("other-secret-0123456789")
    assert not by_path["/revoked"][0].signed_with(SECRET)
    first = by_path["/all"][0].headers
    assert first[EVENT_ID_HEADER.lower()] == "evt_1_1700000000000"
    assert first["x-edge-event"] == "pairing.requested" and first["x-edge-attempt"] == "1"
    assert first["content-type"] == "application/json"


def test_events_wait_while_the_receiver_is_down_and_arrive_once_it_is_back(
    receiver: Receiver,
) -> None:
    settings = notify_settings(hook(receiver), max_attempts=100)
    receiver.stop()

    async def scenario() -> None:
        notifier = fast(settings)
        await notifier.start()
        notifier.submit([event(1), event(2)])
        await async_until(lambda: notifier.stats().retried >= 3, "retries while down")
        notifier.submit([event(3)])
        assert receiver.events() == []
        receiver.start()
        await async_until(lambda: notifier.stats().delivered == 3, "delivery after restart")
        assert notifier.stats().waiting == 0 and notifier.stats().failed == 0
        await notifier.stop()

    asyncio.run(scenario())
    assert [r.json["id"].split("_")[1] for r in receiver.events()] == ["1", "2", "3"]
    retried_first = receiver.events()[0].headers["x-edge-attempt"]
    assert int(retried_first) > 3


def test_a_full_queue_drops_the_oldest_events_and_counts_them(receiver: Receiver) -> None:
    settings = notify_settings(hook(receiver), queue_size=3, max_attempts=100)
    receiver.stop()

    async def scenario() -> None:
        notifier = fast(settings)
        await notifier.start()
        notifier.submit([event(n) for n in range(1, 7)])  # three too many at once
        await async_until(lambda: notifier.stats().retried >= 2, "retries while down")
        notifier.submit([event(7), event(8)])  # two more while three wait
        await async_until(lambda: notifier.stats().dropped == 5, "two more drops")
        assert notifier.stats().waiting == 3
        receiver.start()
        await async_until(lambda: notifier.stats().waiting == 0, "the queue to drain")
        await notifier.stop()

    asyncio.run(scenario())
    assert [r.json["id"].split("_")[1] for r in receiver.events()] == ["6", "7", "8"]


def test_server_errors_are_retried_up_to_max_attempts_then_given_up(receiver: Receiver) -> None:
    receiver.status = 503
    settings = notify_settings(hook(receiver), max_attempts=3)

    async def scenario() -> None:
        notifier = fast(settings)
        await notifier.start()
        notifier.submit([event(1), event(2)])
        await async_until(lambda: notifier.stats().failed == 2, "both given up")
        assert notifier.stats().retried == 4 and notifier.stats().delivered == 0
        await notifier.stop()

    asyncio.run(scenario())
    attempts = [
        (r.json["id"].split("_")[1], r.headers["x-edge-attempt"]) for r in receiver.events()
    ]
    assert attempts == [("1", "1"), ("1", "2"), ("1", "3"), ("2", "1"), ("2", "2"), ("2", "3")]


@pytest.mark.parametrize(
    ("status", "location"), [(401, None), (404, None), (302, "http://127.0.0.1:9/elsewhere")]
)
def test_refusals_and_redirects_are_not_retried_or_followed(
    receiver: Receiver, status: int, location: str | None
) -> None:
    receiver.status, receiver.location = status, location
    settings = notify_settings(hook(receiver))

    async def scenario() -> None:
        notifier = fast(settings)
        await notifier.start()
        notifier.submit([event(1)])
        await async_until(lambda: notifier.stats().failed == 1, "the refusal")
        await notifier.stop()

    asyncio.run(scenario())
    assert len(receiver.events()) == 1 and receiver.events()[0].path == "/hook"


def test_workers_sharing_a_claim_file_send_each_event_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = notify_settings(hook(receiver))
    claim_file = tmp_path / "notify-events.claim"
    events = [event(n) for n in range(1, 41)]

    async def scenario() -> None:
        workers = [fast(settings, EventClaim(claim_file)) for _ in range(3)]
        for worker in workers:
            await worker.start()
        for start in range(0, 40, 8):  # each worker reads the log in batches of its own size
            for size, worker in enumerate(workers, start=1):
                for low in range(start, start + 8, size):
                    worker.submit(events[low : min(low + size, start + 8)])
                    await asyncio.sleep(0)
        await async_until(
            lambda: sum(w.stats().delivered for w in workers) >= 40, "forty deliveries"
        )
        for worker in workers:
            await worker.stop()

    asyncio.run(scenario())
    seqs = sorted(int(r.json["id"].split("_")[1]) for r in receiver.events())
    assert seqs == list(range(1, 41))


def test_replicas_on_one_redis_store_send_each_event_once(
    receiver: Receiver, tmp_path: Path
) -> None:
    from edge.pairing.store.redis import RedisStore
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    stores = [RedisStore(server.url(prefix="notifytest")) for _ in range(2)]
    settings = notify_settings(hook(receiver))
    events = [event(n) for n in range(1, 21)]

    async def scenario() -> None:
        replicas = [fast(settings, claim_for_store(store)) for store in stores]
        for replica in replicas:
            await replica.start()
            replica.submit(events)
        await async_until(
            lambda: sum(r.stats().delivered for r in replicas) >= 20, "twenty deliveries"
        )
        for replica in replicas:
            await replica.stop()

    try:
        asyncio.run(scenario())
        with contextlib.closing(server.client()) as client:
            assert len(list(client.scan_iter(match="notifytest:notify:*"))) == 20
    finally:
        for store in stores:
            store.close()
        server.stop()
    seqs = sorted(int(r.json["id"].split("_")[1]) for r in receiver.events())
    assert seqs == list(range(1, 21))


# -- through the gateway ----------------------------------------------------------------------------


def test_gateway_notifies_pairing_revocation_and_lockout_without_secrets(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = base_config(
        tmp_path,
        notify={"webhooks": [hook(receiver, events=ALL_EVENTS)]},
        auth={"token": GATEWAY_TOKEN, "rate_limit": {"failures": 2, "window": 60, "lockout": 60}},
    )
    app = create_app(config)
    device = Device("kitchen display")
    with client_for(app) as client:
        with open_ws(client) as ws:
            reply = device.handshake(ws, {"token": GATEWAY_TOKEN})
        assert reply["code"] == "PAIRING_REQUIRED"
        local = client_for(app, LOOPBACK, "http://localhost:18789")
        approved = local.post(f"/api/requests/{reply['requestId']}/approve", json={})
        assert approved.status_code == 200, approved.text
        with open_ws(client) as ws:
            hello = device.handshake(ws, {"token": GATEWAY_TOKEN})
        assert hello["type"] == "hello"
        assert local.post(f"/api/devices/{device.id}/revoke").status_code == 200
        intruder = client_for(app, ("198.51.100.9", 5555))
        for _ in range(2):
            intruder.get("/api/devices", headers={"authorization": "Bearer wrong-token"})
        until(lambda: len(receiver.events()) >= 4, "four notifications")
    assert receiver.types() == [
        "pairing.requested",
        "pairing.resolved",
        "device.revoked",
        "auth.lockout",
    ]
    requested, resolved, revoked, lockout = (r.json for r in receiver.events())
    assert requested["data"]["name"] == "kitchen display"
    assert requested["data"]["clientIp"] == REMOTE[0]
    assert resolved["data"]["decision"] == "approved"
    assert revoked["data"]["deviceId"] == device.id
    assert lockout["data"]["client"] == "198.51.100.9"
    assert all(r.signed_with(SECRET) for r in receiver.events())
    assert len({r.json["id"] for r in receiver.events()}) == 4
    assert device.token is not None
    assert not any(device.token.encode() in r.body for r in receiver.events())
    assert not any(
        b"hash" in r.body.lower() or b"token" in r.body.lower() for r in receiver.events()
    )


def test_deliveries_link_the_dashboard_at_server_public_url_as_reloaded(
    receiver: Receiver, tmp_path: Path
) -> None:
    config = base_config(
        tmp_path,
        server={"public_url": "https://edge.example.com"},
        notify={"webhooks": [hook(receiver, events=["pairing.requested"])]},
    )
    config_file = tmp_path / "edge.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    app = create_app(config_file)
    with client_for(app) as client:
        with open_ws(client) as ws:
            device_handshake(ws, Device("first"))
        until(lambda: len(receiver.events()) >= 1, "the first notification")
        config["server"]["public_url"] = "https://gateway.example.org/edge/"
        config_file.write_text(json.dumps(config))
        app.state.gateway.reload()
        with open_ws(client) as ws:
            device_handshake(ws, Device("second"))
        until(lambda: len(receiver.events()) >= 2, "the second notification")
    first, second = (r.json for r in receiver.events())
    assert first["dashboardUrl"] == "https://edge.example.com/"
    assert second["dashboardUrl"] == "https://gateway.example.org/edge/"
    # Without server.public_url there is no link: a loopback guess would mislead the reader.
    assert "dashboardUrl" not in json.loads(event_body(event(1)))


def device_handshake(ws: Any, device: Device) -> None:
    assert device.handshake(ws, {"token": GATEWAY_TOKEN})["code"] == "PAIRING_REQUIRED"


# -- docs/notifications.md -----------------------------------------------------------------------

DOCS = Path(__file__).parents[2] / "docs" / "notifications.md"


def test_the_docs_list_every_event_a_webhook_can_ask_for() -> None:
    text = DOCS.read_text()
    for name in sorted(NOTIFIABLE_EVENTS):
        assert f"| `{name}` |" in text, f"docs/notifications.md has no row for {name}"
    for header in (TIMESTAMP_HEADER, SIGNATURE_HEADER, EVENT_ID_HEADER):
        assert header in text


def test_the_documented_receiver_verifies_edge_and_handles_each_event_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (source,) = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)
    monkeypatch.setenv("EDGE_WEBHOOK_SECRET", SECRET)
    receiver: dict[str, Any] = {"__name__": "documented_receiver"}
    exec(compile(source, str(DOCS), "exec"), receiver)
    handled: list[dict[str, Any]] = []
    receiver["handle"] = handled.append
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver["Receiver"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    right = notify_settings({"url": url, "secret": SECRET})
    wrong = notify_settings({"url": url, "secret": "not-the-shared-secret"})

    async def scenario() -> Notifier:
        twice = [fast(right), fast(right)]  # two senders without a shared claim
        forged = fast(wrong)
        for notifier in (*twice, forged):
            await notifier.start()
        for notifier in twice:
            notifier.submit([event(1), event(2, "device.revoked")])
        forged.submit([event(3)])
        await async_until(
            lambda: sum(n.stats().delivered for n in twice) == 4 and forged.stats().failed == 1,
            "all attempts answered",
        )
        for notifier in (*twice, forged):
            await notifier.stop()
        return forged

    try:
        forged = asyncio.run(scenario())
    finally:
        server.shutdown()
        server.server_close()
    assert [e["id"] for e in handled] == ["evt_1_1700000000000", "evt_2_1700000000000"]
    assert forged.stats().retried == 0  # 401 is final: a wrong secret is not retried

"""Webhooks in the Standard Webhooks format, verified by the ``standardwebhooks`` library.

The receiver is a real aiohttp server on 127.0.0.1 that verifies each POST
exactly as a receiver built on the standard's own library would
(``Webhook(secret).verify(body, headers)``), answering 401 when it does not
verify. Retries keep the message id, are spread by jitter, and never come
sooner than the receiver's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from edge.gateway.notify import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    STANDARD_ID_HEADER,
    STANDARD_SIGNATURE_HEADER,
    STANDARD_TIMESTAMP_HEADER,
    TIMESTAMP_HEADER,
    Notifier,
    backoff_delay,
    retry_after_seconds,
    sign_standard,
    signing_key,
    verify,
)
from edge.pairing.store.claims import EventClaim
from tests.gateway.test_notify import async_until, event, notify_settings

PLAIN_SECRET = "webhook-secret-0123456789"


def standard_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@dataclass
class Arrival:
    headers: dict[str, str]  # names in lower case
    body: bytes
    payload: Any
    at: float  # time.monotonic() on arrival


@dataclass
class StandardReceiver:
    """Verifies with ``standardwebhooks``; answers ``answers`` in turn, then 204."""

    secret: str | bytes
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    verified: list[Arrival] = field(default_factory=list)
    refused: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            self.refused += 1
            return web.Response(status=401)
        self.verified.append(Arrival(headers, body, payload, time.monotonic()))
        status, extra = self.answers.pop(0) if self.answers else (204, {})
        return web.Response(status=status, headers=extra)


@asynccontextmanager
async def serving(receiver: StandardReceiver) -> AsyncIterator[str]:
    """The receiver on a loopback port of its own; yields the webhook URL."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        await runner.cleanup()


def sender(url: str, secret: str, **notifier: Any) -> Notifier:
    settings = notify_settings({"url": url, "secret": secret}, max_attempts=5)
    options = {"backoff_base": 0.02, "backoff_cap": 0.1, **notifier}
    return Notifier(settings, EventClaim(None), **options)


def deliver(
    receiver: StandardReceiver,
    secret: str,
    events: list[Any],
    done: Callable[[Notifier], bool],
    **notifier: Any,
) -> Notifier:
    async def scenario() -> Notifier:
        async with serving(receiver) as url:
            notifying = sender(url, secret, **notifier)
            await notifying.start()
            notifying.submit(events)
            await async_until(lambda: done(notifying), "the deliveries")
            await notifying.stop()
            return notifying

    return asyncio.run(scenario())


# -- the signature --------------------------------------------------------------------------------


def test_the_signature_is_the_standards_own_test_vector() -> None:
    # The example of the Standard Webhooks specification and its libraries' tests.
    signature = sign_standard(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_whsec_secrets_are_their_base64_bytes_and_others_their_text() -> None:
    raw = os.urandom(32)
    encoded = base64.b64encode(raw).decode()
    assert signing_key("whsec_" + encoded) == raw
    assert signing_key("whsec_" + encoded.rstrip("=")) == raw  # padding is optional
    assert signing_key(PLAIN_SECRET) == PLAIN_SECRET.encode()
    assert signing_key("whsec_not base64 at all!") == b"whsec_not base64 at all!"


# -- a real receiver ------------------------------------------------------------------------------


def test_the_standard_library_verifies_every_delivery_beside_edges_own_signature() -> None:
    secret = standard_secret()
    receiver = StandardReceiver(secret)
    events = [event(1), event(2, "pairing.resolved", decision="approved"), event(3)]
    notifier = deliver(receiver, secret, events, lambda n: n.stats().delivered == 3)
    assert receiver.refused == 0
    assert [arrival.payload["id"] for arrival in receiver.verified] == [
        f"evt_{n}_1700000000000" for n in (1, 2, 3)
    ]
    for arrival in receiver.verified:
        headers = arrival.headers
        assert arrival.payload == json.loads(arrival.body)
        assert headers[STANDARD_ID_HEADER] == headers[EVENT_ID_HEADER.lower()]
        assert headers[STANDARD_ID_HEADER] == arrival.payload["id"]
        assert headers[STANDARD_TIMESTAMP_HEADER] == headers[TIMESTAMP_HEADER.lower()]
        assert headers[STANDARD_SIGNATURE_HEADER].startswith("v1,")
        # Edge's own header still verifies with the same secret.
        assert verify(
            secret,
            timestamp=headers[TIMESTAMP_HEADER.lower()],
            signature=headers[SIGNATURE_HEADER.lower()],
            body=arrival.body,
            now=time.time(),
        )
    assert notifier.stats().failed == 0


@pytest.mark.parametrize(
    "receiver_secret",
    [PLAIN_SECRET.encode(), "whsec_" + base64.b64encode(PLAIN_SECRET.encode()).decode()],
    ids=["bytes", "whsec"],
)
def test_a_plain_secret_verifies_as_its_bytes(receiver_secret: str | bytes) -> None:
    receiver = StandardReceiver(receiver_secret)
    deliver(receiver, PLAIN_SECRET, [event(1)], lambda n: n.stats().delivered == 1)
    assert receiver.refused == 0 and len(receiver.verified) == 1


def test_another_secret_does_not_verify_and_is_not_retried() -> None:
    receiver = StandardReceiver(standard_secret())
    notifier = deliver(receiver, standard_secret(), [event(1)], lambda n: n.stats().failed == 1)
    assert receiver.refused == 1 and receiver.verified == []
    assert notifier.stats().retried == 0


def test_a_retry_keeps_the_id_signs_afresh_and_waits_for_retry_after() -> None:
    secret = standard_secret()
    receiver = StandardReceiver(secret, answers=[(503, {"Retry-After": "1"})])
    # The backoff alone would retry within 0.1 s; the receiver asked for a second.
    notifier = deliver(
        receiver, secret, [event(1)], lambda n: n.stats().delivered == 1, backoff_cap=5.0
    )
    first, second = receiver.verified
    assert second.at - first.at >= 1.0
    ids = {arrival.headers[STANDARD_ID_HEADER] for arrival in receiver.verified}
    assert ids == {"evt_1_1700000000000"}
    assert notifier.stats().retried == 1
    assert (first.headers["x-edge-attempt"], second.headers["x-edge-attempt"]) == ("1", "2")


def test_retry_after_never_holds_a_webhook_past_the_longest_backoff() -> None:
    secret = standard_secret()
    receiver = StandardReceiver(secret, answers=[(429, {"Retry-After": "3600"})])
    started = time.monotonic()
    deliver(receiver, secret, [event(1)], lambda n: n.stats().delivered == 1, backoff_cap=0.5)
    assert len(receiver.verified) == 2
    assert 0.5 <= receiver.verified[1].at - receiver.verified[0].at < 10
    assert time.monotonic() - started < 10


# -- backoff and Retry-After ---------------------------------------------------------------------


def test_the_backoff_doubles_is_capped_and_jitters_within_its_upper_half() -> None:
    assert [backoff_delay(n, 1.0, 300.0, 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert [backoff_delay(n, 1.0, 300.0, 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, 1.0, 300.0, 1.0) == 300.0
    assert backoff_delay(200, 1.0, 300.0, 0.5) == 225.0


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = time.time()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds(" 7 ", now) == 7.0
    later = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(later, now) == pytest.approx(30, abs=1.0)
    earlier = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds(earlier, now) == 0.0
    for unusable in (None, "", "soon", "-5", "1.5"):
        assert retry_after_seconds(unusable, now) is None

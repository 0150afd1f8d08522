"""The delivery state file: what a notifier records per attempt, and what readers make of it."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from edge.gateway.notify import Notifier
from edge.notify_state import NotifyState
from edge.pairing.store.claims import EventClaim
from tests.gateway.test_notify import Receiver, async_until, event, hook, notify_settings


def test_a_notifier_records_failures_then_the_success(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 503
    settings = notify_settings(hook(receiver), max_attempts=100)
    state = NotifyState(tmp_path)
    url = settings.webhooks[0].url

    async def scenario() -> None:
        notifier = Notifier(
            settings, EventClaim(None), backoff_base=0.02, backoff_cap=0.05, state=state
        )
        await notifier.start()
        notifier.submit([event(1)])
        await async_until(lambda: state.status(url).consecutive_failures >= 3, "three failures")
        failing = state.status(url)
        assert failing.last_error == "answered 503" and failing.pending == 1
        assert failing.last_success_at is None and failing.next_attempt_at is not None
        receiver.status = 204
        await async_until(lambda: state.status(url).last_success_at, "the delivery")
        await notifier.stop()

    asyncio.run(scenario())
    done = state.status(url)
    assert done.consecutive_failures == 0 and done.pending == 0
    assert done.last_attempt_at == done.last_success_at
    assert done.last_error == "answered 503" and done.last_error_at is not None
    assert done.to_json()["lastSuccessAt"] == int(done.last_success_at * 1000)


def _fail_many(directory: str, count: int) -> None:
    state = NotifyState(Path(directory))
    for n in range(count):
        state.record_attempt(
            "http://hooks.example/in", at=float(n), error="answered 500", pending=1,
            next_attempt_at=None,
        )  # fmt: skip


def test_workers_writing_at_once_lose_no_attempt(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fail_many, args=(str(tmp_path), 40)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    found = NotifyState(tmp_path).status("http://hooks.example/in")
    assert found.consecutive_failures == 120
    assert found.pending == 0  # each worker is gone, and its waiting deliveries with it


def test_pending_counts_live_workers_only_and_urls_stay_out_of_the_file(tmp_path: Path) -> None:
    state = NotifyState(tmp_path)
    url = "https://hooks.example/in?token=s3cr3t"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    state.record_queue(url, pending=5, next_attempt_at=10.0, pid=int(dead.stdout))
    state.record_queue(url, pending=2, next_attempt_at=20.0, pid=os.getpid())
    found = state.status(url)
    assert found.pending == 2 and found.next_attempt_at == 20.0
    assert found.url == "https://hooks.example/in"
    assert "s3cr3t" not in state.path.read_text()
    state.record_queue(url, pending=0, next_attempt_at=None)
    assert state.status(url).pending == 0 and state.status(url).next_attempt_at is None
    assert NotifyState(tmp_path / "elsewhere").status(url).last_attempt_at is None

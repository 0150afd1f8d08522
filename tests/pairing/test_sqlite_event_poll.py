"""The SQLite event poll skips the log while nothing changed, and never misses a change.

``SqliteStore.wait_events`` reads ``PRAGMA data_version`` (moved by commits of
other connections) and the connection's own ``total_changes`` before the log;
each way a change can arrive is exercised here: this thread's own connection,
another thread of the same process, and another handle (another process).
"""

from __future__ import annotations

import threading
from pathlib import Path

from pairing_support import GATEWAY_TOKEN, Client, FakeClock

from edge.pairing.service import PairingService
from edge.pairing.store import open_store


def test_every_kind_of_writer_is_seen_after_a_quiet_poll(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store' / 'edge.sqlite3'}"
    store = open_store(url, tmp_path / "data")
    other_handle = open_store(url, tmp_path / "data")
    clock = FakeClock()
    try:
        here = PairingService(store, GATEWAY_TOKEN, clock=clock)
        elsewhere = PairingService(other_handle, GATEWAY_TOKEN, clock=clock)
        seq = store.latest_seq()
        assert store.wait_events(seq, 0) == []
        assert store.wait_events(seq, 0) == []  # quiet: the log is not read again

        Client(
            here, clock, name="same thread", ip="198.51.100.21"
        ).with_gateway_token()  # this connection writes
        events = store.wait_events(seq, 0)
        assert [event.type for event in events] == ["pairing.requested"]
        seq = events[-1].seq
        assert store.wait_events(seq, 0) == []

        writer = threading.Thread(
            target=lambda: Client(
                here, clock, name="other thread", ip="198.51.100.22"
            ).with_gateway_token()
        )
        writer.start()
        writer.join()
        events = store.wait_events(seq, 0)
        assert [event.type for event in events] == ["pairing.requested"]
        seq = events[-1].seq
        assert store.wait_events(seq, 0) == []

        Client(elsewhere, clock, name="other process", ip="198.51.100.23").with_gateway_token()
        events = store.wait_events(seq, 1.0)
        assert [event.type for event in events] == ["pairing.requested"]
        assert store.wait_events(seq, 0) == events  # an older position still reads the log
    finally:
        other_handle.close()
        store.close()

"""Thirty seconds of ``benchmarks/soak.py``'s mixed traffic: no 5xx, nothing unexpected, fds bounded.

The ten-minute run and its memory slope are in docs/performance.md; this
short run keeps the traffic mix itself from rotting and catches a leak of
descriptors (sockets, files) that shows within seconds. With
``memory_detail`` the server samples itself (``benchmarks/memprobe``), so the
run also checks that SQLite's page cache in the real server stays within its
per-connection bound (thirty seconds grow too small a database to exceed the
old default; the test that fails without the bound is in
tests/pairing/test_pairing_sqlite_store.py) and keeps the probe working.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.soak import IDLE_DASHBOARDS, run_soak
from edge.pairing.store.sqlite import PAGE_CACHE_KIB

pytestmark = pytest.mark.integration

# Open descriptors a healthy server may hold beyond its start: the idle dashboards,
# keepalive connections of the load loops and the upstream pool, and some slack.
FD_ALLOWANCE = IDLE_DASHBOARDS + 64


def test_thirty_seconds_of_mixed_traffic_give_no_5xx_and_bounded_descriptors(
    tmp_path: Path,
) -> None:
    report = run_soak(
        30, sample_every=5, http_loops=2, reload_every=10, tmp=tmp_path, memory_detail=True
    )
    assert report.server_errors == 0, report.statuses
    assert report.unexpected == []
    assert report.counts["http admin list"] > 0 and report.counts["socket sessions"] > 0
    assert report.counts["revocations"] > 0 and report.counts["reloads"] > 0
    first = report.samples[0]
    assert max(sample.fds for sample in report.samples) <= first.fds + FD_ALLOWANCE
    assert report.samples[-1].fds <= first.fds + FD_ALLOWANCE
    assert report.memory_detail, "the server wrote no memory samples"
    for line in report.memory_detail:
        connections = line["sqlite_connections"]
        assert connections >= 1
        # the bound is in KiB of pages; SQLite's accounting adds a header per page
        assert line["sqlite_cache_kib"] <= connections * PAGE_CACHE_KIB * 1.25, line

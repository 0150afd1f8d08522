"""``edge_process_*``: the gateway process's memory, CPU, file descriptors and start time.

Only for a gateway that is one process (``edge serve`` with one worker and no
metrics listener of its own), where that process is the whole gateway and a
scrape reads exactly it. With several workers, or the dedicated listener, a
scrape is answered by one process of many, and prometheus-client's
multiprocess files hold what each worker counted, never its process state:
the answering process's own figures would jump from worker to worker (or
describe the supervisor), so none are exported and the container's or host's
process metrics are the ones to read (docs/metrics.md).

The names carry Edge's prefix like every other series it exports, with
prometheus-client's standard process collector behind them. Virtual memory is
left out: a Python process reserves far more address space than it uses, so
the number says nothing an alert could act on.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from edge.metrics import multiprocess_enabled

PREFIX = "edge"
OMITTED = frozenset({f"{PREFIX}_process_virtual_memory_bytes"})


class _ProcessFamilies(Collector):
    """prometheus-client's process collector for this process, without ``OMITTED``."""

    def __init__(self) -> None:
        self._collector = ProcessCollector(namespace=PREFIX, registry=None)

    def collect(self) -> Iterable[Metric]:
        return [family for family in self._collector.collect() if family.name not in OMITTED]


_registry = CollectorRegistry(auto_describe=True)
_registry.register(_ProcessFamilies())


def process_exposition() -> bytes:
    """This process's ``edge_process_*`` series as exposition text; empty with several workers.

    Nothing on platforms without ``/proc``.
    """
    if multiprocess_enabled():
        return b""
    return generate_latest(_registry)

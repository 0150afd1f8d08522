"""``process_*`` and ``python_*``: the gateway process's memory, CPU, descriptors and interpreter.

These are prometheus-client's standard collectors under their standard names,
so the dashboards and alerts operators already have for Python services
(``process_resident_memory_bytes{job="edge"}``) work on Edge unchanged.

Only for a gateway that is one process (``edge serve`` with one worker and no
metrics listener of its own), where that process is the whole gateway and a
scrape reads exactly it. With several workers, or the dedicated listener, a
scrape is answered by one process of many, and prometheus-client's
multiprocess files hold what each worker counted, never its process state:
the answering process's own figures would jump from worker to worker (or
describe the supervisor), so none are exported and the container's or host's
process metrics are the ones to read (docs/metrics.md).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from edge.metrics import multiprocess_enabled

_registry = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=_registry)
PlatformCollector(registry=_registry)
GCCollector(registry=_registry)


def process_exposition() -> bytes:
    """This process's ``process_*`` and ``python_*`` series; empty with several workers.

    ``process_*`` needs ``/proc``: elsewhere only ``python_*`` is exported.
    """
    if multiprocess_enabled():
        return b""
    return generate_latest(_registry)

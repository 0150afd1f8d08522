"""What else runs on this host that changes who "loopback" really is.

A reverse proxy on the same host connects from 127.0.0.1. If it forwards
without any proxy header (nginx's bare ``proxy_pass`` does), its visitors look
exactly like a browser on this machine. Edge cannot tell them apart by the
request alone, so the server and ``edge doctor`` say so out loud.
"""

from __future__ import annotations

import os
from pathlib import Path

REVERSE_PROXY_PROCESSES = ("nginx", "caddy", "haproxy", "traefik", "envoy", "apache2", "httpd")


def running_reverse_proxies(proc: Path = Path("/proc")) -> list[str]:
    """Names of reverse-proxy processes running on this host (Linux /proc; else empty)."""
    found = set()
    for comm in proc.glob("[0-9]*/comm"):
        try:
            name = comm.read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if name in REVERSE_PROXY_PROCESSES:
            found.add(name)
    return sorted(found)


def same_host_proxy_advice(proxies: list[str]) -> str:
    return (
        f"{', '.join(proxies)} is running on this host and local.loopback is on: if it proxies "
        "to Edge without X-Forwarded-For/Forwarded headers, its visitors look like local "
        "loopback clients. Make the proxy set X-Forwarded-For (the files in deploy/ do) and add "
        "its address to proxy.trusted_proxies, or set local.loopback: false"
    )


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a process we may not signal still counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

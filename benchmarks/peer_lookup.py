"""What asking the kernel for a connection's owner costs: once per new loopback connection.

Usage: python benchmarks/peer_lookup.py [--lookups 1000] [--repeats 5]

One loopback TCP connection of this process is looked up ``--lookups`` times
by each path of ``edge.peercred``: the whole ``owner_of_socket`` (netlink
``sock_diag``, the path ``edge serve`` takes), ``sock_diag_uid`` alone, and the
``/proc/net/tcp`` fallback, whose cost grows with the number of sockets on the
host (printed). Rows: µs per lookup, the fastest of ``--repeats`` batches. The
lookup runs once when a connection opens, never per request.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.http_stack import machine_line  # noqa: E402
from edge.peercred import owner_of_socket, proc_net_tcp_uid, sock_diag_uid  # noqa: E402


def best(call: Callable[[], object], lookups: int, repeats: int) -> float:
    fastest = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(lookups):
            call()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest / lookups * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname()) as client:
            accepted, _ = server.accept()
            with accepted:
                peer, local = accepted.getpeername(), accepted.getsockname()
                assert owner_of_socket(accepted).verdict == "same-user"
                rows = [
                    ("owner_of_socket (sock_diag)", lambda: owner_of_socket(accepted)),
                    ("sock_diag_uid alone", lambda: sock_diag_uid(socket.AF_INET, peer, local)),
                    ("/proc/net/tcp fallback", lambda: proc_net_tcp_uid(peer, local)),
                ]
                timings = [(name, best(call, args.lookups, args.repeats)) for name, call in rows]
            del client
    with open("/proc/net/tcp", encoding="ascii") as table:
        sockets = sum(1 for _ in table) - 1
    print(machine_line())
    print(f"{args.lookups} lookups x {args.repeats} repeats; {sockets} IPv4 TCP sockets on the host")
    for name, micros in timings:
        print(f"  {name:<30} {micros:10.1f} µs per lookup")


if __name__ == "__main__":
    main()

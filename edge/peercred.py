"""Who owns the other end of a connection: asked of the kernel, once per connection.

A loopback address says the peer runs on this machine, not who runs it: a
same-host nginx worker, HAProxy, socat or another account's browser all
connect from 127.0.0.1. The kernel knows the owner of the peer's socket:

- unix socket: ``SO_PEERCRED`` on the accepted socket;
- loopback TCP: the peer's own socket is found by the connection's exact
  4-tuple seen from its side (source = our peer, destination = our local
  address) with one netlink ``sock_diag`` request (``inet_diag_req_v2``
  without ``NLM_F_DUMP``: the kernel looks the one socket up, so the cost does
  not grow with the number of sockets on the host); if netlink is unavailable,
  ``/proc/net/tcp`` and ``/proc/net/tcp6`` are scanned for the same row.

The answer is an ``edge.net.PeerOwner``; the resolver decides what it means.
``edge.gateway.protocols`` calls ``owner_of_transport`` as each connection
opens. Nothing here imports the ASGI layer, so ``edge doctor`` can use it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable

from edge.net.peer import PeerOwner

# linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_INET_DIAG_NOCOOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF
_NLMSGHDR = struct.Struct("=IHHII")
# inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid:
# sport, dport (network order: packed with htons), src[16], dst[16], if, cookie[2]
_REQUEST = struct.Struct("=BBBBIHH16s16sIII")
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid
_MSG_UID = struct.Struct("=BBBB48sIIII")
_SO_PEERCRED = getattr(socket, "SO_PEERCRED", 17)
_UCRED = struct.Struct("=iII")  # pid, uid, gid
NOT_LOOPBACK = "not looked up: not a loopback peer"


class PeerLookups:
    """How many owner lookups this process made: one per loopback or unix connection.

    The number exists to be watched (``edge_peer_lookups_total``, a test): it
    must grow with connections, never with the requests sent over them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self._observers: list[Callable[[str], None]] = []

    def observe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(verdict)`` after each lookup; returns the function that stops it."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback) if callback in self._observers else None

    def record(self, owner: PeerOwner) -> None:
        with self._lock:
            self.count += 1
        for callback in list(self._observers):
            with contextlib.suppress(Exception):  # a metric must never break a connection
                callback(owner.verdict)


LOOKUPS = PeerLookups()


@functools.lru_cache(maxsize=256)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None


def gateway_owner() -> tuple[int, str | None]:
    """The gateway's own user: the effective uid the kernel compares sockets against."""
    uid = os.geteuid()
    return uid, user_name(uid)


def _owner(uid: int | None, source: str) -> PeerOwner:
    me, my_name = gateway_owner()
    return PeerOwner(uid, user_name(uid) if uid is not None else None, me, my_name, source)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def unix_peer_uid(sock: socket.socket) -> int:
    """The uid of the process that connected a unix socket (``SO_PEERCRED``)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERCRED, _UCRED.size)
    return int(_UCRED.unpack(raw)[1])


def _packed(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    return address.packed.ljust(16, b"\0")


def sock_diag_uid(
    family: int, peer: tuple[str, int], local: tuple[str, int], *, timeout: float = 1.0
) -> int | None:
    """The owner uid of the TCP socket whose source is ``peer`` and destination ``local``.

    One request, one answer (the kernel's exact lookup); None when no such socket
    exists. Raises OSError when netlink itself is unavailable.
    """
    peer_ip, local_ip = _ip(peer[0]), _ip(local[0])
    if peer_ip is None or local_ip is None:
        return None
    request = _REQUEST.pack(
        family,
        socket.IPPROTO_TCP,
        0,
        0,
        _ALL_STATES,
        socket.htons(peer[1]),
        socket.htons(local[1]),
        _packed(peer_ip),
        _packed(local_ip),
        0,
        _INET_DIAG_NOCOOKIE,
        _INET_DIAG_NOCOOKIE,
    )
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0
    )
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(timeout)
        nl.sendto(header + request, (0, 0))
        data = nl.recv(65536)
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        body = offset + _NLMSGHDR.size
        if kind == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0]
            if code in (0, errno.ENOENT):
                return None
            raise OSError(code, f"sock_diag: {os.strerror(code)}")
        if kind == _NLMSG_DONE:
            return None
        if kind == _SOCK_DIAG_BY_FAMILY and len(data) >= body + _MSG_UID.size:
            return int(_MSG_UID.unpack_from(data, body)[8])
        offset += (length + 3) & ~3
    return None


def _proc_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> str:
    """An address as ``/proc/net/tcp*`` prints it: 32-bit words in host byte order, then port."""
    words = struct.unpack(f"={len(address.packed) // 4}I", address.packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"


def proc_net_tcp_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The same question as ``sock_diag_uid``, answered by scanning ``/proc/net/tcp{,6}``."""
    peer_ip, local_ip = _ip(peer[0]), _ip(local[0])
    if peer_ip is None or local_ip is None:
        return None
    candidates = [(peer_ip, local_ip)]
    if peer_ip.version == 4 and local_ip.version == 4:
        # a v6 socket talking to a v4 address shows mapped addresses in tcp6
        prefix = b"\0" * 10 + b"\xff\xff"
        candidates.append(
            (
                ipaddress.IPv6Address(prefix + peer_ip.packed),
                ipaddress.IPv6Address(prefix + local_ip.packed),
            )
        )
    for source, destination in candidates:
        table = "/proc/net/tcp" if source.version == 4 else "/proc/net/tcp6"
        wanted = (_proc_address(source, peer[1]), _proc_address(destination, local[1]))
        with open(table, encoding="ascii") as rows:
            next(rows, None)
            for row in rows:
                fields = row.split()
                if len(fields) > 7 and (fields[1], fields[2]) == wanted:
                    return int(fields[7])
    return None


def _is_loopback(text: str) -> bool:
    address = _ip(text)
    return address is not None and address.is_loopback


def owner_of_socket(sock: socket.socket) -> PeerOwner:
    """Ask the kernel who owns the other end of ``sock``; never raises.

    Only unix sockets and loopback TCP peers are looked up: a peer on another
    host has no owner this kernel knows, and locality never asks for one.
    """
    try:
        if sock.family == socket.AF_UNIX:
            return _owner(unix_peer_uid(sock), "SO_PEERCRED")
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError as exc:
        return _owner(None, f"the socket could not be read: {exc.strerror or exc}")
    if not _is_loopback(peer[0]):
        return _owner(None, NOT_LOOPBACK)
    peer_pair, local_pair = (peer[0], int(peer[1])), (local[0], int(local[1]))
    peer_ip = _ip(peer[0])
    family = socket.AF_INET if peer_ip is not None and peer_ip.version == 4 else socket.AF_INET6
    try:
        uid = sock_diag_uid(family, peer_pair, local_pair)
        if uid is not None:
            return _owner(uid, "sock_diag")
    except OSError:
        pass  # no netlink here (a container without it, a seccomp filter): try /proc
    try:
        uid = proc_net_tcp_uid(peer_pair, local_pair)
    except OSError as exc:
        return _owner(None, f"neither sock_diag nor /proc/net/tcp answered: {exc.strerror or exc}")
    if uid is None:
        return _owner(None, "the peer's socket was not found (sock_diag, /proc/net/tcp)")
    return _owner(uid, "/proc/net/tcp")


def owner_of_transport(transport: asyncio.BaseTransport) -> PeerOwner:
    """The owner behind a uvicorn transport, counted in ``LOOKUPS`` when the kernel was asked."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return _owner(None, "the transport exposes no socket")
    owner = owner_of_socket(sock)
    if owner.source != NOT_LOOPBACK:  # a remote peer asks the kernel nothing, so counts nothing
        LOOKUPS.record(owner)
    return owner


def self_test() -> PeerOwner:
    """Look up a loopback connection of this very process: proves the lookup works here."""
    try:
        return _self_test()
    except OSError as exc:
        return _owner(None, f"a loopback test connection failed: {exc.strerror or exc}")


def _self_test() -> PeerOwner:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2) as client:
            accepted, _ = server.accept()
            with accepted:
                owner = owner_of_socket(accepted)
            del client
    return owner


def peer_check_summary(rule: str) -> str:
    """The rule in force and whether the lookup works here, for the banner, log and doctor."""
    if rule == "address":
        return (
            "local.peer_check: address: any loopback connection without proxy headers is local, "
            "whoever owns it (weaker: a same-host proxy or another user's process counts as local)"
        )
    found = self_test()
    if found.verdict == "unknown":
        return (
            f"local.peer_check: uid, but {found.describe()}: no loopback client can be local "
            "here; approve devices with `edge devices approve`, or set local.peer_check: address"
        )
    return (
        f"local.peer_check: uid: a loopback client is local only if its connection belongs to "
        f"edge's user {found.gateway_user or found.gateway_uid} (uid {found.gateway_uid}); "
        f"checked with {found.source}"
    )

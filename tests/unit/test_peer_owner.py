"""Peer credentials: the kernel's word on who owns a connection, and what locality makes of it.

The lookups run against real sockets: a loopback TCP connection of this
process, one made by a process running as ``nobody`` (via ``runuser``, as
root), and the same for a unix socket (``SO_PEERCRED``). The resolver cases
cross each owner fact (same user, other user, unknown) with both rules of
``local.peer_check``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge.net import NOT_LOOKED_UP, NetworkSet, PeerOwner, ResolverPolicy, resolve
from edge.net.origin import is_same_origin, normalise_origin, own_origin
from edge.peercred import (
    owner_of_socket,
    proc_net_tcp_uid,
    self_test,
    sock_diag_uid,
    unix_peer_uid,
)

NOBODY = 65534
SAME = PeerOwner(1000, "alice", 1000, "alice", "sock_diag")
OTHER = PeerOwner(33, "www-data", 1000, "alice", "sock_diag")
UNKNOWN = PeerOwner(None, None, 1000, "alice", "the peer's socket was not found")

as_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None,
    reason="needs root and runuser to connect as another user",
)


# -- the resolver, given an owner fact ------------------------------------------------------


def _local(
    owner: PeerOwner, rule: str, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[bool, str]:
    policy = ResolverPolicy(peer_check=rule)
    found = resolve(
        ("127.0.0.1", 40000),
        headers if headers is not None else [(b"host", b"127.0.0.1:18789")],
        policy,
        peer_owner=owner,
    )
    return found.local, found.local_rule


@pytest.mark.parametrize(
    ("owner", "rule", "local"),
    [
        (SAME, "uid", True),
        (OTHER, "uid", False),
        (UNKNOWN, "uid", False),
        (NOT_LOOKED_UP, "uid", False),
        (SAME, "address", True),
        (OTHER, "address", True),
        (UNKNOWN, "address", True),
        (NOT_LOOKED_UP, "address", True),
    ],
    ids=lambda v: v.verdict if isinstance(v, PeerOwner) else str(v),
)
def test_loopback_locality_by_owner_and_rule(owner: PeerOwner, rule: str, local: bool) -> None:
    assert _local(owner, rule)[0] is local


def test_another_users_connection_is_named_in_the_rule() -> None:
    local, rule = _local(OTHER, "uid")
    assert not local
    assert rule == (
        "the connection belongs to user www-data (uid 33), not to edge's user alice (uid 1000) "
        "(sock_diag): not local (local.peer_check: uid)"
    )


def test_an_unknown_owner_says_why() -> None:
    local, rule = _local(NOT_LOOKED_UP, "uid")
    assert not local
    assert "did not come through `edge serve`" in rule and "local.peer_check: uid" in rule


def test_the_address_rule_says_it_does_not_check_the_owner() -> None:
    local, rule = _local(OTHER, "address")
    assert local
    assert "local.peer_check: address" in rule and "not checked" in rule


def test_the_owner_never_makes_a_proxied_or_cross_site_request_local() -> None:
    assert not _local(SAME, "uid", [(b"host", b"localhost"), (b"x-forwarded-for", b"1.2.3.4")])[0]
    origin = [(b"host", b"localhost:18789"), (b"origin", b"http://localhost:3000")]
    assert not _local(SAME, "uid", origin)[0]
    assert not _local(SAME, "address", origin)[0]


def test_a_remembered_answer_is_never_reused_for_another_owner() -> None:
    policy = ResolverPolicy()
    headers = [(b"host", b"localhost")]
    assert resolve(("127.0.0.1", 1), headers, policy, peer_owner=SAME).local
    assert not resolve(("127.0.0.1", 1), headers, policy, peer_owner=OTHER).local


def test_whoami_shape_carries_the_owner_and_the_rule() -> None:
    found = resolve(("127.0.0.1", 1), [], ResolverPolicy(), peer_owner=OTHER).to_dict()
    assert found["peer"] == {
        "ip": "127.0.0.1",
        "port": 1,
        "uid": 33,
        "user": "www-data",
        "owner": "other-user",
        "found_by": "sock_diag",
    }
    assert found["peer_check"] == "uid"


def test_a_bad_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="peer_check"):
        ResolverPolicy(peer_check="maybe")


# -- exact origins: one function --------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "scheme", "host", "same"),
    [
        ("http://localhost:18789", "http", "localhost:18789", True),
        ("http://localhost:18789", "ws", "localhost:18789", True),
        ("http://localhost:3000", "http", "localhost:18789", False),
        ("http://127.0.0.1:18789", "http", "localhost:18789", False),
        ("https://localhost:18789", "http", "localhost:18789", False),
        ("http://LOCALHOST:80", "http", "localhost", True),
        ("https://edge.example.com", "wss", "edge.example.com:443", True),
        ("http://[::1]:18789", "http", "[::1]:18789", True),
        ("http://evil.example@localhost:18789", "http", "localhost:18789", False),
        ("null", "http", "localhost", False),
        ("http://localhost:18789", "http", None, False),
    ],
)
def test_same_origin_is_scheme_host_and_port(
    origin: str, scheme: str, host: str | None, same: bool
) -> None:
    assert is_same_origin(origin, scheme, host) is same


def test_allowed_origins_count_as_same_origin() -> None:
    allowed = frozenset({"https://ops.example.com"})
    assert is_same_origin("https://ops.example.com", "http", "localhost:18789", allowed)
    assert not is_same_origin("https://ops.example.com:8443", "http", "localhost:18789", allowed)
    policy = ResolverPolicy(allowed_origins=frozenset({"https://ops.example.com/"}))
    headers = [(b"host", b"localhost:18789"), (b"origin", b"https://ops.example.com")]
    assert resolve(("127.0.0.1", 1), headers, policy, peer_owner=SAME).local


def test_origins_normalise_default_ports_and_brackets() -> None:
    assert normalise_origin("HTTPS://Edge.Example.com:443/") == "https://edge.example.com"
    assert own_origin("wss", "[::1]:8443") == "https://[::1]:8443"
    assert normalise_origin("http://localhost/page") is None


# -- the lookups, on real sockets ----------------------------------------------------------


@contextmanager
def _listener(family: int = socket.AF_INET, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    with socket.socket(family, socket.SOCK_STREAM) as server:
        server.bind((host, 0))
        server.listen(4)
        server.settimeout(20)
        yield server


def _connect_as_nobody(address: str, port: int | None = None) -> subprocess.Popen[bytes]:
    """A process running as nobody that connects and waits for the connection to close."""
    target = f"({address!r}, {port})" if port is not None else repr(address)
    family = (
        "socket.AF_UNIX"
        if port is None
        else ("socket.AF_INET6" if ":" in address else "socket.AF_INET")
    )
    script = (
        "import socket\n"
        f"s = socket.socket({family}, socket.SOCK_STREAM)\n"
        f"s.connect({target})\n"
        "s.recv(1)\n"
    )
    return subprocess.Popen(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", script])


def test_a_loopback_connection_of_this_process_belongs_to_its_user() -> None:
    with _listener() as server, socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            owner = owner_of_socket(accepted)
            peer, local = accepted.getpeername(), accepted.getsockname()
            assert sock_diag_uid(socket.AF_INET, peer, local) == os.geteuid()
            # /proc/net/tcp answers the same question the same way (the fallback)
            assert proc_net_tcp_uid(peer, local) == os.geteuid()
        del client
    assert owner.uid == os.geteuid() and owner.verdict == "same-user"
    assert owner.source == "sock_diag"


def test_ipv6_loopback_is_looked_up_too() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        listener = _listener(socket.AF_INET6, "::1")
        server = listener.__enter__()
    except OSError:
        pytest.skip("no ::1 on this host")
    try:
        with socket.create_connection(server.getsockname()[:2]) as client:
            accepted, _ = server.accept()
            with accepted:
                owner = owner_of_socket(accepted)
                assert (
                    proc_net_tcp_uid(accepted.getpeername()[:2], accepted.getsockname()[:2])
                    == os.geteuid()
                )
            del client
    finally:
        listener.__exit__(None, None, None)
    assert owner.uid == os.geteuid() and owner.source == "sock_diag"


def test_no_socket_matches_a_made_up_four_tuple() -> None:
    assert sock_diag_uid(socket.AF_INET, ("127.0.0.1", 1), ("127.0.0.1", 2)) is None
    assert proc_net_tcp_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None


@as_nobody
def test_a_connection_from_another_user_is_that_users() -> None:
    with _listener() as server:
        host, port = server.getsockname()
        child = _connect_as_nobody(host, port)
        try:
            accepted, _ = server.accept()
            with accepted:
                owner = owner_of_socket(accepted)
                fallback = proc_net_tcp_uid(accepted.getpeername(), accepted.getsockname())
        finally:
            child.wait(timeout=20)
    assert owner.uid == NOBODY and owner.user == "nobody"
    assert owner.verdict == "other-user"
    assert fallback == NOBODY
    assert "belongs to user nobody (uid 65534), not to edge's user" in owner.describe()


def test_a_unix_socket_peer_is_known_by_so_peercred() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert unix_peer_uid(left) == os.getuid()
        owner = owner_of_socket(left)
    assert owner.verdict == "same-user" and owner.source == "SO_PEERCRED"


@as_nobody
def test_a_unix_socket_client_of_another_user_is_that_users() -> None:
    directory = Path(tempfile.mkdtemp())
    try:
        directory.chmod(0o755)
        path = directory / "edge.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            path.chmod(0o777)
            server.listen(1)
            server.settimeout(20)
            child = _connect_as_nobody(str(path))
            try:
                accepted, _ = server.accept()
                with accepted:
                    owner = owner_of_socket(accepted)
            finally:
                child.wait(timeout=20)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert owner.uid == NOBODY and owner.source == "SO_PEERCRED"
    assert owner.verdict == "other-user"


def test_a_remote_peer_is_not_looked_up() -> None:
    # A socket to a non-loopback address cannot be made here; a loopback listener's own
    # socket has no peer, which must answer "unknown", never raise.
    with _listener() as server:
        owner = owner_of_socket(server)
    assert owner.verdict == "unknown" and "could not be read" in owner.source


def test_the_self_test_finds_this_user() -> None:
    found = self_test()
    assert found.verdict == "same-user"


def test_policy_from_settings_carries_the_rule() -> None:
    from edge.config import load_settings
    from edge.config.policies import build_policy

    settings = load_settings({"local": {"peer_check": "address"}}, environ={})
    assert build_policy(settings).peer_check == "address"
    assert build_policy(load_settings({}, environ={})).peer_check == "uid"
    assert isinstance(build_policy(settings).trusted_proxies, NetworkSet)

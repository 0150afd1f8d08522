"""Client resolution: who is really asking, and are they local?

Proxy headers are believed only from a peer in ``proxy.trusted_proxies``; the
chain is walked right to left and the first untrusted entry is the client.
A request is local only if nothing about it is suspicious: a direct loopback
peer that sent no proxy header at all and whose connection belongs to the
gateway's own OS user (``local.peer_check: uid``: a same-host reverse proxy or
TCP forwarder runs as another user, so it can never make its visitors local),
or a client in ``local.networks``. In both cases the Host must name a local
host, which defeats DNS rebinding, and any Origin must be exactly the
gateway's own origin (scheme, host and port), which defeats a page on another
port of the same machine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from edge.net.address import (
    Address,
    address_is_loopback,
    address_of,
    clip,
    endpoint_of,
    parse_host,
)
from edge.net.forwarded import ForwardedElement, parse_forwarded, split_x_forwarded_for
from edge.net.networks import NetworkSet
from edge.net.origin import is_same_origin, normalise_origin, own_origin
from edge.net.peer import NOT_LOOKED_UP, PEER_CHECKS, SAME_USER, PeerOwner

PROXY_HEADERS = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
    }
)
CLIENT_IP_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
SCHEMES = frozenset({"http", "https", "ws", "wss"})
_TO_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_TO_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}

_UNTRUSTED_PEER = "not in proxy.trusted_proxies: proxy headers from it are ignored"

UNTRUSTED_PROXY_HEADERS = "untrusted_proxy_headers"
MALFORMED_FORWARDED = "malformed_forwarded"
TOO_MANY_HOPS = "too_many_hops"

DEFAULT_MAX_HOPS = 64
# Remembered answers per policy (see ``resolve``): how many, and the most header bytes a
# remembered request may carry, so the memo stays under a few MB whatever clients send.
MEMO_ENTRIES = 1024
MEMO_MAX_HEADER_BYTES = 1024
_RESOLUTION_HEADERS = PROXY_HEADERS | {b"host", b"origin"}
# Longest Host kept in a Resolution: a valid one is at most 253 + ":65535" characters.
_MAX_HOST_TEXT = 300


def _normalise_local_host(host: object) -> str:
    if not isinstance(host, str):
        raise ValueError(f"local_hosts: {clip(repr(host))} is not a string")
    parsed = parse_host(host)
    if parsed is not None and parsed[1] is None:
        return parsed[0]
    # Not a valid Host value, so no request can ever name it: kept (normalised)
    # but inert; validating the configuration is edge.config's job.
    return host.strip().lower().rstrip(".")


@dataclass(frozen=True, slots=True)
class ResolverPolicy:
    """The configuration resolution needs, validated and normalised once."""

    trusted_proxies: NetworkSet = field(default_factory=NetworkSet)
    client_ip_headers: tuple[str, ...] = ("x-forwarded-for",)
    local_loopback: bool = True
    local_networks: NetworkSet = field(default_factory=NetworkSet)
    local_hosts: frozenset[str] = frozenset()
    max_hops: int = DEFAULT_MAX_HOPS
    # "uid": a loopback peer is direct only if its connection is the gateway user's own;
    # "address": the loopback address alone decides (weaker: any local user or proxy counts)
    peer_check: str = "uid"
    # auth.allowed_origins, normalised: the origins besides the gateway's own that count as it
    allowed_origins: frozenset[str] = frozenset()
    # client_ip_headers with their ASGI (bytes) names, made once
    header_keys: tuple[tuple[str, bytes], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    # recent resolutions by (peer, scheme, websocket, the headers resolution reads)
    memo: dict[object, Resolution] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        for name in ("trusted_proxies", "local_networks"):
            if not isinstance(getattr(self, name), NetworkSet):
                raise TypeError(f"{name} must be a NetworkSet (build it with NetworkSet.parse)")
        if isinstance(self.client_ip_headers, str):
            raise TypeError("client_ip_headers must be a sequence of header names, not one string")
        headers: list[str] = []
        for index, header in enumerate(self.client_ip_headers):
            name = header.strip().lower() if isinstance(header, str) else header
            if name not in CLIENT_IP_HEADERS:
                raise ValueError(
                    f"client_ip_headers[{index}]: {clip(repr(header))} is not supported "
                    f"(use one of: {', '.join(CLIENT_IP_HEADERS)})"
                )
            if name in headers:
                raise ValueError(f"client_ip_headers[{index}]: {header!r} is listed twice")
            headers.append(name)
        if (
            isinstance(self.max_hops, bool)
            or not isinstance(self.max_hops, int)
            or self.max_hops < 1
        ):
            raise ValueError(f"max_hops must be a positive integer, got {self.max_hops!r}")
        if isinstance(self.local_hosts, str):
            raise TypeError("local_hosts must be a collection of host names, not one string")
        hosts = frozenset(_normalise_local_host(h) for h in self.local_hosts)
        if self.peer_check not in PEER_CHECKS:
            raise ValueError(
                f"peer_check: {clip(repr(self.peer_check))} is not one of {', '.join(PEER_CHECKS)}"
            )
        if isinstance(self.allowed_origins, str):
            raise TypeError("allowed_origins must be a collection of origins, not one string")
        origins = set()
        for origin in self.allowed_origins:
            normalised = normalise_origin(origin)
            if normalised is None:
                raise ValueError(f"allowed_origins: {clip(repr(origin))} is not an origin")
            origins.add(normalised)
        object.__setattr__(self, "allowed_origins", frozenset(origins))
        object.__setattr__(self, "client_ip_headers", tuple(headers))
        object.__setattr__(self, "header_keys", tuple((h, h.encode()) for h in headers))
        object.__setattr__(self, "local_hosts", hosts)
        object.__setattr__(self, "local_loopback", bool(self.local_loopback))


@dataclass(frozen=True, slots=True)
class Hop:
    """One step of the walk: an address, where it came from, and what it was judged to be."""

    address: str
    source: str
    verdict: str
    detail: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """What resolution decided about one request; ``hops`` and ``local_rule`` say why."""

    client_ip: str | None
    client_port: int | None
    peer_ip: str | None
    peer_port: int | None
    trusted_peer: bool
    scheme: str
    host: str | None
    local: bool
    local_rule: str
    hops: tuple[Hop, ...]
    anomalies: tuple[str, ...]
    header_used: str | None
    proxied: bool = False  # any proxy header was present, trusted or not
    peer_owner: PeerOwner = NOT_LOOKED_UP  # what the kernel said about the connection's owner
    peer_check: str = "uid"  # the local.peer_check rule the decision was made under
    # The bounded metrics label: the first anomaly, ``trusted`` or ``none``. Counted on
    # every request, so it is worked out once, when the resolution is made.
    proxy_outcome: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.anomalies:
            outcome = self.anomalies[0]
        else:
            outcome = "trusted" if self.trusted_peer and self.proxied else "none"
        object.__setattr__(self, "proxy_outcome", outcome)

    def to_dict(self) -> dict[str, object]:
        return {
            "client": {"ip": self.client_ip, "port": self.client_port},
            "peer": {"ip": self.peer_ip, "port": self.peer_port, **self.peer_owner.to_dict()},
            "peer_check": self.peer_check,
            "trusted_peer": self.trusted_peer,
            "scheme": self.scheme,
            "host": self.host,
            "local": self.local,
            "local_rule": self.local_rule,
            "hops": [
                {"address": h.address, "source": h.source, "verdict": h.verdict, "detail": h.detail}
                for h in self.hops
            ],
            "anomalies": list(self.anomalies),
            "header_used": self.header_used,
        }


def _host_is_loopback_name(host: str, policy: ResolverPolicy) -> bool:
    if host == "localhost" or host.endswith(".localhost") or host in policy.local_hosts:
        return True
    address = address_of(host)
    return address is not None and address_is_loopback(address)


def _host_is_local_network_name(host: str, policy: ResolverPolicy) -> bool:
    if host == "localhost" or host.endswith(".localhost") or host in policy.local_hosts:
        return True
    return address_of(host) is not None


def _parse_peer(peer: object) -> tuple[Address | None, str | None, int | None]:
    """The peer's address (if it is one), its text, and its port; never raises."""
    if peer is None:
        return None, None, None
    try:
        host, port = peer[0], peer[1]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None, None, None
    text = host if isinstance(host, str) else str(host)
    address = address_of(text)
    if address is None and "%" in text:
        # The socket itself reports link-local IPv6 peers with a zone id; the
        # address is still the kernel's, so it is trusted as such. Headers never get this.
        address = address_of(text.partition("%")[0])
        if address is not None and address[0] != 6:
            address = None
    if address is not None:
        text = address[2]
    peer_port = port if isinstance(port, int) and not isinstance(port, bool) else None
    if peer_port is not None and not 0 <= peer_port <= 65535:
        peer_port = None
    return address, text, peer_port


class _Walk:
    """Mutable scratch state of one resolution (kept out of the frozen result)."""

    __slots__ = (
        "anomalies",
        "client",
        "client_port",
        "client_text",
        "element",
        "header_used",
        "hops",
    )

    def __init__(self, address: Address | None, text: str | None, port: int | None) -> None:
        self.hops: list[Hop] = []
        self.anomalies: list[str] = []
        self.client = address
        self.client_text = text
        self.client_port = port
        self.header_used: str | None = None
        self.element: ForwardedElement | None = None


def _malformed_detail(entry: str, element: ForwardedElement | None) -> str:
    stops = "; the walk stops at the last trusted hop"
    if element is not None and not element.valid:
        return "not a valid RFC 7239 element" + stops
    if element is not None and element.for_ is None:
        return "element has no for= parameter" + stops
    if entry.lower() == "unknown":
        return "'unknown': the proxy does not know its client" + stops
    if entry.startswith("_"):
        return "an obfuscated identifier, not an address" + stops
    return "not an IP address, ip:port or [ipv6]:port" + stops


def _walk_entries(
    walk: _Walk,
    entries: list[str],
    elements: list[ForwardedElement] | None,
    more: bool,
    source: str,
    policy: ResolverPolicy,
) -> None:
    """Right to left: trusted entries are further proxies; the first untrusted one is the client."""
    trusted = policy.trusted_proxies
    for index in range(len(entries) - 1, -1, -1):
        entry = entries[index]
        element = elements[index] if elements is not None else None
        usable = element is None or (element.valid and element.for_ is not None)
        endpoint = endpoint_of(entry) if usable else None
        if endpoint is None:
            walk.hops.append(
                Hop(clip(entry), source, "malformed", _malformed_detail(entry, element))
            )
            walk.anomalies.append(MALFORMED_FORWARDED)
            return
        address, port = endpoint
        walk.client, walk.client_text, walk.client_port = address, address[2], port
        walk.element = element
        found = trusted.find(address)
        if found is None:
            walk.hops.append(
                Hop(entry, source, "client", "first address not in proxy.trusted_proxies")
            )
            return
        walk.hops.append(
            Hop(entry, source, "trusted proxy", f"in proxy.trusted_proxies ({found[1]})")
        )
    if more:
        walk.hops.append(
            Hop(
                "...",
                source,
                "not walked",
                f"more than {policy.max_hops} entries; the rest is ignored",
            )
        )
        walk.anomalies.append(TOO_MANY_HOPS)


def _header_entries(
    name: str, lines: list[str], limit: int
) -> tuple[list[str], list[ForwardedElement] | None, bool]:
    if name == "x-forwarded-for":
        entries, more = split_x_forwarded_for(lines, limit)
        return entries, None, more
    if name == "forwarded":
        elements, more = parse_forwarded(lines, limit)
        return [e.for_ if e.for_ is not None else e.raw for e in elements], elements, more
    value = lines[0].strip()  # x-real-ip: one address, from the first line
    return ([value] if value else []), None, False


def _rightmost(lines: list[str] | None) -> str | None:
    """The last non-empty comma-separated value over all lines (X-Forwarded-Proto, -Host)."""
    if not lines:
        return None
    last = lines[-1].rpartition(",")[2].strip()
    if last:
        return last
    entries, _ = split_x_forwarded_for(lines, 1)
    return entries[0] if entries else None


def resolve(
    peer: tuple[str, int] | None,
    headers: Iterable[tuple[bytes, bytes]],
    policy: ResolverPolicy,
    *,
    scheme: str = "http",
    websocket: bool = False,
    peer_owner: PeerOwner = NOT_LOOKED_UP,
) -> Resolution:
    """Resolve one request: never raises, whatever the peer and the header bytes are.

    ``peer_owner`` is what the kernel said about the connection's owner
    (``edge.gateway.peers`` looks it up once per connection); without it a
    loopback peer is not local under ``local.peer_check: uid``.

    The answer is a pure function of the peer, its owner, the scheme, the socket kind and
    the proxy, Host and Origin header lines, so recent answers are remembered
    per policy: every request on a keepalive connection (or forwarded over a
    proxy's pooled connection for the same client) repeats them. A reload
    builds a new policy and so starts with an empty memo.
    """
    relevant: list[tuple[bytes, bytes]] = []
    size = 0
    for name, value in headers:
        name = name.lower()
        if name in _RESOLUTION_HEADERS:
            relevant.append((name, value))
            size += len(value)
    key: object = None
    memo = policy.memo
    if (
        size <= MEMO_MAX_HEADER_BYTES
        and type(peer) is tuple
        and len(peer) == 2
        and type(peer[0]) is str
        and type(peer[1]) is int
        and type(scheme) is str
    ):
        key = (peer, peer_owner, scheme, bool(websocket), tuple(relevant))
        cached = memo.get(key)
        if cached is not None:
            return cached
    resolution = _resolve(peer, relevant, policy, scheme, bool(websocket), peer_owner)
    if key is not None:
        if len(memo) >= MEMO_ENTRIES:
            # another thread may evict at the same moment; losing that race is harmless
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del memo[next(iter(memo))]
        memo[key] = resolution
    return resolution


def _resolve(
    peer: tuple[str, int] | None,
    headers: list[tuple[bytes, bytes]],
    policy: ResolverPolicy,
    scheme: str,
    websocket: bool,
    peer_owner: PeerOwner,
) -> Resolution:
    proxy_lines: dict[bytes, list[str]] = {}
    hosts: list[str] = []
    origins: list[str] = []
    for name, value in headers:
        if name in PROXY_HEADERS:
            proxy_lines.setdefault(name, []).append(value.decode("latin-1"))
        elif name == b"host":
            hosts.append(value.decode("latin-1"))
        else:
            origins.append(value.decode("latin-1"))

    peer_address, peer_text, peer_port = _parse_peer(peer)
    trusted_proxies = policy.trusted_proxies
    walk = _Walk(peer_address, peer_text, peer_port)
    if peer is None:
        trusted_peer = trusted_proxies.allow_unix
        detail = "unix socket, trusted by 'unix' in proxy.trusted_proxies"
    else:
        found = trusted_proxies.find(peer_address) if peer_address is not None else None
        trusted_peer = found is not None
        detail = f"in proxy.trusted_proxies ({found[1]})" if found is not None else ""
    peer_label = clip(peer_text) if peer_text is not None else "unix socket"
    if trusted_peer:
        walk.hops.append(Hop(peer_label, "peer", "trusted proxy", detail))
    else:
        walk.hops.append(Hop(peer_label, "peer", "client", _UNTRUSTED_PEER))

    resolved_scheme = scheme if scheme in SCHEMES else "http"
    resolved_host = hosts[0] if hosts else None
    if not trusted_peer:
        if proxy_lines:
            walk.anomalies.append(UNTRUSTED_PROXY_HEADERS)
    elif proxy_lines:
        for header, key in policy.header_keys:
            lines = proxy_lines.get(key)
            if lines:
                walk.header_used = header
                entries, elements, more = _header_entries(header, lines, policy.max_hops)
                _walk_entries(walk, entries, elements, more, header, policy)
                break
        proto: str | None = None
        forwarded_host: str | None = None
        if walk.element is not None:
            proto = walk.element.proto
            forwarded_host = walk.element.host
        if proto is None:
            proto = _rightmost(proxy_lines.get(b"x-forwarded-proto"))
        if proto is not None and proto.lower() in SCHEMES:
            resolved_scheme = proto.lower()
        if forwarded_host is None:
            forwarded_host = _rightmost(proxy_lines.get(b"x-forwarded-host"))
        if forwarded_host is not None and parse_host(forwarded_host) is not None:
            resolved_host = forwarded_host
    resolved_scheme = (_TO_WS if websocket else _TO_HTTP)[resolved_scheme]

    local, rule = _locality(
        policy,
        peer_address,
        peer_owner,
        bool(proxy_lines),
        walk,
        resolved_scheme,
        resolved_host,
        hosts,
        origins,
    )
    return Resolution(
        client_ip=walk.client_text,
        client_port=walk.client_port,
        peer_ip=peer_text,
        peer_port=peer_port,
        trusted_peer=trusted_peer,
        scheme=resolved_scheme,
        host=None if resolved_host is None else clip(resolved_host.strip().lower(), _MAX_HOST_TEXT),
        local=local,
        local_rule=rule,
        hops=tuple(walk.hops),
        anomalies=tuple(dict.fromkeys(walk.anomalies)),
        header_used=walk.header_used,
        proxied=bool(proxy_lines),
        peer_owner=peer_owner,
        peer_check=policy.peer_check,
    )


def _locality(
    policy: ResolverPolicy,
    peer: Address | None,
    peer_owner: PeerOwner,
    proxied: bool,
    walk: _Walk,
    scheme: str,
    raw_host: str | None,
    hosts: list[str],
    origins: list[str],
) -> tuple[bool, str]:
    """Local or not, and the rule that decided, in words for ``edge explain``."""
    if walk.anomalies:
        return False, f"{walk.anomalies[0]}: a request with a suspicious proxy chain is never local"
    if len(hosts) > 1:
        return False, f"{len(hosts)} Host headers: an ambiguous request is never local"
    parsed_host = parse_host(raw_host) if raw_host is not None else None
    host_name = parsed_host[0] if parsed_host is not None else None
    if raw_host is not None and host_name is None:
        return False, f"Host {clip(repr(raw_host))} is not a valid host"
    if len(origins) > 1:
        return False, f"{len(origins)} Origin headers: an ambiguous request is never local"
    origin = origins[0] if origins else None
    if origin is not None and normalise_origin(origin) is None:
        return False, f"Origin {clip(repr(origin))} is not a usable origin"
    cross_site: str | None = None
    if origin is not None and not is_same_origin(origin, scheme, raw_host, policy.allowed_origins):
        own = own_origin(scheme, raw_host) or "unknown (no Host)"
        cross_site = (
            f"Origin {clip(repr(origin))} is not the gateway's own origin {clip(own)} "
            "nor in auth.allowed_origins (cross-site request?)"
        )

    reason: str | None = None
    if peer is not None and address_is_loopback(peer):
        if not policy.local_loopback:
            reason = "local.loopback is off: loopback clients are not local"
        elif proxied:
            reason = "proxy headers present: a proxied request is never direct loopback"
        elif host_name is not None and not _host_is_loopback_name(host_name, policy):
            reason = f"Host {host_name!r} is not a local name (DNS rebinding?)"
        elif cross_site is not None:
            reason = cross_site
        elif policy.peer_check == "address":
            return True, (
                "direct loopback client (local.peer_check: address, the connection's owner is "
                f"not checked; {peer_owner.describe()})"
            )
        elif peer_owner.verdict != SAME_USER:
            reason = f"{peer_owner.describe()}: not local (local.peer_check: uid)"
        else:
            return True, f"direct loopback client: {peer_owner.describe()}"

    client = walk.client
    found = policy.local_networks.find(client) if client is not None else None
    if client is not None and found is not None:
        if host_name is None:
            return False, "no Host header: a local-network client must name the host it asked for"
        if not _host_is_local_network_name(host_name, policy):
            return False, f"Host {host_name!r} is a domain name not in local.hosts (DNS rebinding?)"
        # An IP-literal Origin is not enough: a page on an attacker's bare IP, or on
        # another port of the gateway's host, would make a cross-site request look local.
        if cross_site is not None:
            return False, cross_site
        return True, f"client {client[2]} is in local.networks ({found[1]})"
    if reason is not None:
        return False, reason
    who = clip(walk.client_text) if walk.client_text else "unix socket client"
    return False, f"client {who} is not loopback and not in local.networks"

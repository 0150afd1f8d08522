"""Properties of resolution over generated peers and headers (hypothesis).

- Over arbitrary header bytes (non-UTF-8, huge lines) resolution never raises
  and its result keeps its invariants.
- The client is always the peer or a valid entry of the header in use.
- Headers from an untrusted peer change nothing but the anomaly (and so locality).
- An IPv4-mapped IPv6 spelling resolves exactly like the IPv4 address.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.net import NetworkSet, ResolverPolicy, describe, parse_endpoint, parse_ip, resolve
from edge.net.resolve import PROXY_HEADERS

Headers = list[tuple[bytes, bytes]]

POLICIES = [
    ResolverPolicy(),
    ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "2001:db8:a::/48"])),
    ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "127.0.0.1", "unix"]),
        client_ip_headers=("forwarded", "x-forwarded-for", "x-real-ip"),
        local_networks=NetworkSet.parse(["192.168.1.0/24", "fd00::/8"], allow_unix_word=False),
        local_hosts=frozenset({"edge.lan"}),
    ),
    ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "192.168.0.0/16"]),
        client_ip_headers=("x-real-ip",),
        local_networks=NetworkSet.parse(["192.168.1.0/24"], allow_unix_word=False),
        local_loopback=False,
    ),
    ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]),
        client_ip_headers=("x-forwarded-for", "forwarded"),
        max_hops=3,
    ),
]
policies = st.sampled_from(POLICIES)

trusted_v4 = st.integers(0, 2**24 - 1).map(lambda v: str(ipaddress.IPv4Address((10 << 24) | v)))
lan_v4 = st.integers(0, 255).map(lambda v: f"192.168.1.{v}")
public_v4 = st.integers(0, 255).map(lambda v: f"203.0.113.{v}")
loopback_v4 = st.integers(0, 2**24 - 1).map(lambda v: str(ipaddress.IPv4Address((127 << 24) | v)))
any_v6 = st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v)))
trusted_v6 = st.integers(0, 2**80 - 1).map(
    lambda v: str(ipaddress.IPv6Address((0x20010DB8000A << 80) | v))
)
v4_addresses = st.one_of(trusted_v4, lan_v4, public_v4, loopback_v4)
addresses = st.one_of(v4_addresses, any_v6, trusted_v6, st.just("::1"))
garbage = st.sampled_from(
    [
        "unknown",
        "_hidden",
        "1.2.3",
        "010.0.0.1",
        "2001:db8::1%eth0",
        "host.example",
        "[1.2.3.4]",
        "1.2.3.4:",
        "1.2.3.4:99999",
        "",
        " ",
        "::ffff:1.2.3",
        "[::1",
        "1.2.3.4 5",
    ]
)


@st.composite
def endpoint_texts(draw: st.DrawFn) -> str:
    """A spelling of an endpoint: plain, with a port, bracketed, mapped, or garbage."""
    if draw(st.integers(0, 5)) == 0:
        return draw(garbage)
    address = draw(addresses)
    if ":" not in address and draw(st.booleans()):
        address = f"::ffff:{address}"
    port = draw(st.none() | st.integers(0, 65535))
    if ":" in address:
        if port is None and draw(st.booleans()):
            return address
        return f"[{address}]" if port is None else f"[{address}]:{port}"
    return address if port is None else f"{address}:{port}"


@st.composite
def peers(draw: st.DrawFn) -> tuple[str, int] | None:
    roll = draw(st.integers(0, 9))
    if roll == 0:
        return None
    if roll == 1:
        return (draw(st.sampled_from(["testclient", "", "not an ip", "fe80::1%eth0"])), 50000)
    return (draw(addresses), draw(st.integers(0, 65535)))


@st.composite
def policy_and_proxy_peer(draw: st.DrawFn) -> tuple[ResolverPolicy, tuple[str, int] | None]:
    """A policy, and most of the time a peer it trusts, so the walk itself is exercised."""
    policy = draw(policies)
    candidates = [
        draw(trusted_v4.map(lambda a: (a, 443))),
        draw(trusted_v6.map(lambda a: (a, 443))),
        ("127.0.0.1", 443),
        None,
    ]
    trusted = [p for p in candidates if (p[0] if p else None) in policy.trusted_proxies]
    use_trusted = draw(st.integers(0, 4)) > 0
    if trusted and use_trusted:
        return policy, draw(st.sampled_from(trusted))
    return policy, draw(peers())


@st.composite
def structured_headers(draw: st.DrawFn) -> tuple[Headers, dict[str, list[str]]]:
    """Proxy headers made of known entries; returns the headers and the entries per header."""
    headers: Headers = []
    entries: dict[str, list[str]] = {"x-forwarded-for": [], "forwarded": [], "x-real-ip": []}
    for _ in range(draw(st.integers(0, 3))):
        line = draw(st.lists(endpoint_texts(), max_size=6))
        entries["x-forwarded-for"] += line
        separator = draw(st.sampled_from([", ", ",", " , ", ",,"]))
        headers.append((b"x-forwarded-for", separator.join(line).encode()))
    for _ in range(draw(st.integers(0, 2))):
        line = draw(st.lists(endpoint_texts(), max_size=5))
        entries["forwarded"] += line
        proto = draw(st.sampled_from(["", ";proto=https", ";proto=http", ";proto=gopher"]))
        headers.append(
            (b"forwarded", ", ".join(f'for="{value}"{proto}' for value in line).encode())
        )
    if draw(st.booleans()):
        value = draw(endpoint_texts())
        entries["x-real-ip"].append(value)
        headers.append((b"x-real-ip", value.encode()))
    if draw(st.booleans()):
        headers.append(
            (b"x-forwarded-proto", draw(st.sampled_from([b"https", b"http", b"wss", b"x"])))
        )
    if draw(st.booleans()):
        headers.append(
            (b"x-forwarded-host", draw(st.sampled_from([b"edge.lan", b"a.example", b"!"])))
        )
    if draw(st.booleans()):
        hosts = [
            b"localhost",
            b"edge.lan",
            b"192.168.1.5:18789",
            b"[::1]",
            b"evil.example",
            b"bad host",
        ]
        headers.append((b"host", draw(st.sampled_from(hosts))))
    if draw(st.booleans()):
        origins = [
            b"http://localhost",
            b"null",
            b"https://evil.example",
            b"http://192.168.1.5:18789",
        ]
        headers.append((b"origin", draw(st.sampled_from(origins))))
    headers = draw(st.permutations(headers))
    return headers, entries


header_names = st.one_of(
    st.sampled_from(
        [
            b"x-forwarded-for",
            b"forwarded",
            b"x-real-ip",
            b"x-forwarded-proto",
            b"x-forwarded-host",
            b"x-forwarded-port",
            b"host",
            b"origin",
            b"X-Forwarded-For",
            b"FORWARDED",
            b"user-agent",
        ]
    ),
    st.binary(max_size=16),
)
header_values = st.one_of(
    st.binary(max_size=120),
    # huge lines: a short chunk repeated up to about a megabyte
    st.tuples(st.binary(min_size=1, max_size=24), st.integers(1_000, 40_000)).map(
        lambda chunk_times: chunk_times[0] * chunk_times[1]
    ),
)
arbitrary_headers = st.lists(st.tuples(header_names, header_values), max_size=8)

ALLOWED_ANOMALIES = {"untrusted_proxy_headers", "malformed_forwarded", "too_many_hops"}
OUTCOMES = ALLOWED_ANOMALIES | {"trusted", "none"}


def peer_text(peer: tuple[str, int] | None) -> str | None:
    if peer is None:
        return None
    address = parse_ip(peer[0]) or parse_ip(peer[0].partition("%")[0])
    return str(address) if address is not None else peer[0]


def canonical(entry: str) -> str | None:
    endpoint = parse_endpoint(entry.strip())
    return None if endpoint is None else str(endpoint[0])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    peers(),
    arbitrary_headers,
    policies,
    st.booleans(),
    st.sampled_from(["http", "https", "ws", "x"]),
)
def test_arbitrary_header_bytes_never_raise_and_keep_the_invariants(
    peer: tuple[str, int] | None,
    headers: Headers,
    policy: ResolverPolicy,
    websocket: bool,
    scheme: str,
) -> None:
    result = resolve(peer, headers, policy, scheme=scheme, websocket=websocket)

    assert result.scheme in (("ws", "wss") if websocket else ("http", "https"))
    assert set(result.anomalies) <= ALLOWED_ANOMALIES and len(result.anomalies) <= 1
    assert result.proxy_outcome in OUTCOMES
    assert not (result.local and result.anomalies)
    assert result.peer_ip == peer_text(peer)
    if result.client_ip is not None and result.client_ip != result.peer_ip:
        assert str(parse_ip(result.client_ip)) == result.client_ip
    proxied = any(name.lower() in PROXY_HEADERS for name, _ in headers)
    if proxied and not result.trusted_peer:
        assert result.anomalies == ("untrusted_proxy_headers",)
        assert result.client_ip == result.peer_ip
    assert result.hops[0].source == "peer"
    assert all(len(hop.address) <= 80 for hop in result.hops)
    assert len(result.local_rule) < 400
    assert result.host is None or len(result.host) <= 300
    json.dumps(result.to_dict())
    assert "decision" in describe(result, policy)


@settings(max_examples=300, deadline=None)
@given(policy_and_proxy_peer(), structured_headers())
def test_the_client_is_the_peer_or_a_valid_entry_of_the_header_in_use(
    policy_and_peer: tuple[ResolverPolicy, tuple[str, int] | None],
    generated: tuple[Headers, dict[str, list[str]]],
) -> None:
    policy, peer = policy_and_peer
    headers, entries = generated
    result = resolve(peer, headers, policy)
    if result.client_ip == peer_text(peer):
        return
    assert result.trusted_peer
    assert result.header_used is not None
    valid = {canonical(entry) for entry in entries[result.header_used]} - {None}
    assert result.client_ip in valid


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(public_v4, lan_v4, loopback_v4, any_v6, st.just("testclient")).map(
        lambda a: (a, 4242)
    )
    | st.none(),
    structured_headers(),
    arbitrary_headers,
    policies,
)
def test_headers_from_an_untrusted_peer_change_nothing_but_the_anomaly(
    peer: tuple[str, int] | None,
    generated: tuple[Headers, dict[str, list[str]]],
    extra: Headers,
    policy: ResolverPolicy,
) -> None:
    if peer is not None and peer[0] in policy.trusted_proxies:
        return
    if peer is None and policy.trusted_proxies.allow_unix:
        return
    headers = generated[0] + extra
    without = [(name, value) for name, value in headers if name.lower() not in PROXY_HEADERS]
    proxied = len(without) != len(headers)
    with_headers = resolve(peer, headers, policy)
    without_headers = resolve(peer, without, policy)

    for attribute in (
        "client_ip",
        "client_port",
        "peer_ip",
        "trusted_peer",
        "scheme",
        "host",
        "hops",
        "header_used",
    ):
        assert getattr(with_headers, attribute) == getattr(without_headers, attribute), attribute
    assert without_headers.anomalies == ()
    if proxied:
        assert with_headers.anomalies == ("untrusted_proxy_headers",)
        assert with_headers.local is False
    else:
        assert with_headers == without_headers


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(trusted_v4, v4_addresses),
    st.integers(0, 65535),
    structured_headers(),
    policies,
    st.booleans(),
)
def test_ipv4_mapped_peer_resolves_exactly_like_the_ipv4_peer(
    address: str,
    port: int,
    generated: tuple[Headers, dict[str, list[str]]],
    policy: ResolverPolicy,
    websocket: bool,
) -> None:
    headers = generated[0]
    plain = resolve((address, port), headers, policy, websocket=websocket)
    mapped = resolve((f"::ffff:{address}", port), headers, policy, websocket=websocket)
    assert mapped == plain


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(trusted_v4, public_v4, loopback_v4).map(lambda a: (a, 1)),
    st.lists(st.tuples(v4_addresses, st.none() | st.integers(0, 65535)), min_size=1, max_size=8),
    st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip"]),
    policies,
)
def test_ipv4_mapped_entries_resolve_like_the_ipv4_entries(
    peer: tuple[str, int], chain: list[tuple[str, int | None]], header: str, policy: ResolverPolicy
) -> None:
    def spelled(mapped: bool) -> Headers:
        texts = []
        for address, port in chain:
            if mapped:
                texts.append(f"[::ffff:{address}]" + ("" if port is None else f":{port}"))
            else:
                texts.append(address + ("" if port is None else f":{port}"))
        if header == "forwarded":
            value = ", ".join(f'for="{text}"' for text in texts)
        elif header == "x-real-ip":
            value = texts[-1]
        else:
            value = ", ".join(texts)
        return [(header.encode(), value.encode()), (b"host", b"192.168.1.5")]

    plain = resolve(peer, spelled(False), policy)
    mapped = resolve(peer, spelled(True), policy)
    for attribute in (
        "client_ip",
        "client_port",
        "trusted_peer",
        "local",
        "anomalies",
        "scheme",
        "header_used",
    ):
        assert getattr(mapped, attribute) == getattr(plain, attribute), attribute
    assert [h.verdict for h in mapped.hops] == [h.verdict for h in plain.hops]
    assert [h.detail for h in mapped.hops] == [h.detail for h in plain.hops]


def test_generated_peers_include_every_kind() -> None:
    # The strategies above must keep producing the shapes the properties are about.
    kinds: set[str] = set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(peers())
    def collect(peer: Any) -> None:
        if peer is None:
            kinds.add("unix")
        elif parse_ip(peer[0]) is None:
            kinds.add("not an address")
        else:
            kinds.add("address")

    collect()
    assert kinds == {"unix", "not an address", "address"}

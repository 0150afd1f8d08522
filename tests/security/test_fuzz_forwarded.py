"""RFC 7239 ``Forwarded`` built from its grammar, then mangled: resolution holds its ground.

Whatever the chain says, the client is the peer or an address written in the
header, a proxied request is never local by the loopback rule, nothing
raises, and the remembered answers of ``resolve`` equal freshly computed ones.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.net import NetworkSet, ResolverPolicy, parse_forwarded, resolve

TRUSTED = ("10.0.0.0/8", "2001:db8:1::/48")
PEERS = (("10.0.0.1", 443), ("127.0.0.1", 8080), ("198.51.100.4", 1000), ("2001:db8:1::9", 80))

ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts)))
ipv6 = st.sampled_from(["::1", "2001:db8:1::7", "2001:db8::5", "fe80::1", "::ffff:10.1.2.3", "::"])
trusted_v4 = st.integers(0, 255).map(lambda n: f"10.0.0.{n}")
node_address = st.one_of(
    ipv4,
    trusted_v4,
    ipv6.map(lambda a: f"[{a}]"),
    st.sampled_from(["unknown", "_hidden", "_a.b-c", "localhost", "0127.0.0.1", ""]),
)
node = st.builds(
    lambda address, port: address + (f":{port}" if port is not None else ""),
    node_address,
    st.one_of(st.none(), st.integers(0, 70000), st.just("_port")),
)
value = st.one_of(node, node.map(lambda text: f'"{text}"'), st.text(max_size=12))
pair = st.builds(
    lambda name, text: f"{name}={text}",
    st.sampled_from(["for", "For", "FOR", "by", "proto", "host", "x", ""]),
    value,
)
element = st.lists(pair, max_size=4).map(";".join)
header_line = st.lists(element, max_size=6).map(", ".join)


def _mangle(text: str, cuts: list[int], junk: str) -> str:
    for cut in cuts:
        index = cut % (len(text) + 1)
        text = text[:index] + junk + text[index:]
    return text


mangled_line = st.one_of(
    header_line,
    st.builds(
        _mangle,
        header_line,
        st.lists(st.integers(0, 500), max_size=3),
        st.sampled_from(['"', "\\", ",", ";", "=", "[", "]", " ", "\x00", "\u00ff"]),
    ),
)


def _policy() -> ResolverPolicy:
    return ResolverPolicy(
        trusted_proxies=NetworkSet.parse(list(TRUSTED)),
        client_ip_headers=("forwarded", "x-forwarded-for"),
    )


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(mangled_line, min_size=1, max_size=3), peer=st.sampled_from(PEERS))
def test_generated_forwarded_chains_resolve_without_surprises(
    lines: list[str], peer: tuple[str, int]
) -> None:
    headers = [(b"forwarded", line.encode("latin-1", "replace")) for line in lines]
    headers.append((b"host", b"edge.example.com"))
    elements, _more = parse_forwarded(lines, 64)
    assert len(elements) <= 64
    result = resolve(peer, headers, _policy())
    assert result.client_ip is not None
    written = " ".join(lines).lower()
    assert (
        result.client_ip == peer[0]
        or result.client_ip.split("%")[0] in written
        or (
            # IPv4-mapped IPv6 entries resolve to the IPv4 address
            "::ffff:" + result.client_ip in written
        )
    )
    assert not (result.local and result.local_rule == "direct loopback client")


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(mangled_line, min_size=1, max_size=2),
    peer=st.sampled_from(PEERS),
    websocket=st.booleans(),
    host=st.sampled_from([b"localhost", b"edge.example.com", b"127.0.0.1:18789", b"\xff"]),
)
def test_remembered_answers_equal_fresh_ones(
    lines: list[str], peer: tuple[str, int], websocket: bool, host: bytes
) -> None:
    headers = [(b"forwarded", line.encode("latin-1", "replace")) for line in lines]
    headers.append((b"host", host))
    shared = _policy()
    first = resolve(peer, headers, shared, websocket=websocket)
    again = resolve(peer, headers, shared, websocket=websocket)
    fresh = resolve(peer, headers, _policy(), websocket=websocket)
    assert again is first
    assert fresh == first


def test_the_memo_is_bounded_and_skips_long_headers() -> None:
    from edge.net.resolve import MEMO_ENTRIES, MEMO_MAX_HEADER_BYTES

    policy = _policy()
    for port in range(MEMO_ENTRIES + 50):
        resolve(("10.0.0.1", port), [(b"x-forwarded-for", b"203.0.113.1")], policy)
    assert len(policy.memo) == MEMO_ENTRIES
    long_chain = ", ".join(["203.0.113.1"] * MEMO_MAX_HEADER_BYTES).encode()
    before = dict(policy.memo)
    resolve(("10.0.0.1", 1), [(b"x-forwarded-for", long_chain)], policy)
    assert policy.memo == before

"""The resolution API others code against: policy validation, the result's shape, explanations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge.net import Hop, NetworkSet, PeerOwner, Resolution, ResolverPolicy, describe, resolve


def test_policy_normalises_header_names_and_local_hosts() -> None:
    policy = ResolverPolicy(
        client_ip_headers=[" Forwarded", "X-Forwarded-For"],  # type: ignore[arg-type]
        local_hosts=frozenset({"Edge.LAN.", "[::1]", "192.168.1.5"}),
    )
    assert policy.client_ip_headers == ("forwarded", "x-forwarded-for")
    assert policy.local_hosts == frozenset({"edge.lan", "::1", "192.168.1.5"})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param(
            {"client_ip_headers": ("x-client-ip",)},
            ValueError,
            "client_ip_headers[0]: 'x-client-ip' is not supported (use one of: forwarded, "
            "x-forwarded-for, x-real-ip)",
            id="unknown_header",
        ),
        pytest.param(
            {"client_ip_headers": ("x-real-ip", "X-Real-IP")},
            ValueError,
            "client_ip_headers[1]: 'X-Real-IP' is listed twice",
            id="duplicate_header",
        ),
        pytest.param(
            {"client_ip_headers": "x-forwarded-for"},
            TypeError,
            "not one string",
            id="one_string_instead_of_a_list",
        ),
        pytest.param(
            {"max_hops": 0}, ValueError, "max_hops must be a positive integer", id="zero_hops"
        ),
        pytest.param(
            {"max_hops": True}, ValueError, "max_hops must be a positive integer", id="boolean_hops"
        ),
        pytest.param(
            {"trusted_proxies": ["10.0.0.0/8"]},
            TypeError,
            "trusted_proxies must be a NetworkSet",
            id="list_instead_of_network_set",
        ),
        pytest.param(
            {"local_networks": "192.168.0.0/16"},
            TypeError,
            "local_networks must be a NetworkSet",
            id="text_instead_of_network_set",
        ),
        pytest.param(
            {"local_hosts": "edge.lan"}, TypeError, "not one string", id="one_host_string"
        ),
        pytest.param(
            {"local_hosts": frozenset({5})},
            ValueError,
            "local_hosts: 5 is not a string",
            id="non_string_host",
        ),
    ],
)
def test_policy_rejects_bad_values_with_a_specific_message(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        ResolverPolicy(**kwargs)
    assert message in str(info.value)


def test_policy_is_an_immutable_value() -> None:
    policy = ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]))
    assert policy == ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]))
    with pytest.raises(AttributeError):
        policy.max_hops = 3  # type: ignore[misc]


def test_to_dict_has_the_whoami_shape_and_is_json() -> None:
    policy = ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]))
    result = resolve(
        ("10.0.0.2", 4000),
        [(b"x-forwarded-for", b"203.0.113.7:5000"), (b"host", b"Edge.Example.com")],
        policy,
        scheme="https",
    )
    assert result.to_dict() == {
        "client": {"ip": "203.0.113.7", "port": 5000},
        "peer": {
            "ip": "10.0.0.2",
            "port": 4000,
            "uid": None,
            "user": None,
            "owner": "unknown",
            "found_by": "not looked up: the connection did not come through `edge serve`",
        },
        "peer_check": "uid",
        "trusted_peer": True,
        "scheme": "https",
        "host": "edge.example.com",
        "local": False,
        "local_rule": "client 203.0.113.7 is not loopback and not in local.networks",
        "hops": [
            {
                "address": "10.0.0.2",
                "source": "peer",
                "verdict": "trusted proxy",
                "detail": "in proxy.trusted_proxies (10.0.0.0/8)",
            },
            {
                "address": "203.0.113.7:5000",
                "source": "x-forwarded-for",
                "verdict": "client",
                "detail": "first address not in proxy.trusted_proxies",
            },
        ],
        "anomalies": [],
        "header_used": "x-forwarded-for",
    }
    json.dumps(result.to_dict())


@pytest.mark.parametrize(
    ("peer", "headers", "outcome"),
    [
        pytest.param(("203.0.113.7", 1), [], "none", id="no_headers"),
        pytest.param(
            ("203.0.113.7", 1),
            [(b"x-forwarded-for", b"1.2.3.4")],
            "untrusted_proxy_headers",
            id="untrusted",
        ),
        pytest.param(
            ("10.0.0.2", 1), [(b"x-forwarded-for", b"1.2.3.4")], "trusted", id="trusted_walk"
        ),
        pytest.param(
            ("10.0.0.2", 1), [(b"x-forwarded-proto", b"https")], "trusted", id="trusted_proto_only"
        ),
        pytest.param(("10.0.0.2", 1), [], "none", id="trusted_peer_without_headers"),
        pytest.param(
            ("10.0.0.2", 1), [(b"x-forwarded-for", b"junk")], "malformed_forwarded", id="malformed"
        ),
    ],
)
def test_proxy_outcome_is_a_bounded_metrics_label(
    peer: tuple[str, int], headers: list[tuple[bytes, bytes]], outcome: str
) -> None:
    policy = ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]))
    assert resolve(peer, headers, policy).proxy_outcome == outcome


def test_malformed_hops_say_why_the_walk_stopped() -> None:
    policy = ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]), client_ip_headers=("forwarded",)
    )
    details = {}
    for value in ["for=unknown", 'for="_hidden"', "for=junk!", "proto=https", "=bad"]:
        result = resolve(("10.0.0.2", 1), [(b"forwarded", value.encode())], policy)
        details[value] = result.hops[-1].detail
        assert result.hops[-1].verdict == "malformed"
        assert details[value].endswith("the walk stops at the last trusted hop")
    assert details["for=unknown"].startswith("'unknown': the proxy does not know its client")
    assert details['for="_hidden"'].startswith("an obfuscated identifier")
    assert details["for=junk!"].startswith("not an IP address")
    assert details["proto=https"].startswith("element has no for= parameter")
    assert details["=bad"].startswith("not a valid RFC 7239 element")


def test_hostile_values_are_clipped_in_everything_shown() -> None:
    policy = ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]))
    huge = b"x" * 100_000
    result = resolve(
        ("10.0.0.2", 1),
        [(b"x-forwarded-for", huge), (b"host", huge), (b"origin", huge)],
        policy,
    )
    assert all(len(hop.address) <= 80 for hop in result.hops)
    assert result.host is not None and len(result.host) <= 300
    assert len(result.local_rule) < 200
    bad_host = resolve(("127.0.0.1", 1), [(b"host", huge)], ResolverPolicy())
    assert len(bad_host.local_rule) < 200


def test_describe_walks_the_hops_and_names_the_decision() -> None:
    policy = ResolverPolicy(
        trusted_proxies=NetworkSet.parse([f"10.{i}.0.0/16" for i in range(10)] + ["unix"]),
    )
    result = resolve(
        ("10.0.0.2", 4000),
        [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7, 10.1.0.3"), (b"host", b"edge.example.com")],
        policy,
    )
    text = describe(result, policy)
    assert "peer      10.0.0.2 port 4000 (trusted)" in text
    assert "10.7.0.0/16, ... 2 more, unix" in text
    assert "using     x-forwarded-for, walked right to left" in text
    assert "[x-forwarded-for] trusted proxy: in proxy.trusted_proxies (10.1.0.0/16)" in text
    assert "[x-forwarded-for] client: first address not in proxy.trusted_proxies" in text
    assert "6.6.6.6" not in text  # never reached
    assert "decision  REMOTE (must pair" in text
    assert text.splitlines()[-1].startswith("because   client 203.0.113.7")


def test_describe_explains_each_anomaly_and_a_local_decision() -> None:
    policy = ResolverPolicy()
    spoofed = resolve(("127.0.0.1", 1), [(b"x-forwarded-for", b"1.2.3.4")], policy)
    text = describe(spoofed, policy)
    assert "trusted   proxy.trusted_proxies: none" in text
    assert "untrusted_proxy_headers: proxy headers came from a peer that is not in" in text
    own = PeerOwner(1000, "alice", 1000, "alice", "sock_diag")
    local = resolve(("127.0.0.1", 1), [(b"host", b"localhost")], policy, peer_owner=own)
    assert "decision  LOCAL (no pairing needed)" in describe(local, policy)
    unix = resolve(None, [], ResolverPolicy(trusted_proxies=NetworkSet.parse(["unix"])))
    assert "client    (none: unix socket)" in describe(unix, policy)


def test_hops_and_resolutions_are_frozen_values() -> None:
    hop = Hop("10.0.0.2", "peer", "trusted proxy", "in proxy.trusted_proxies")
    with pytest.raises(AttributeError):
        hop.verdict = "client"  # type: ignore[misc]
    result = resolve(("203.0.113.7", 1), [], ResolverPolicy())
    assert isinstance(result, Resolution)
    assert result == resolve(("203.0.113.7", 1), [], ResolverPolicy())
    with pytest.raises(AttributeError):
        result.local = True  # type: ignore[misc]

"""NetworkSet: every bad entry reported by index, lookups that agree with a linear scan."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.net import NetworkSet, NetworkSetError, parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def test_membership_of_addresses_text_and_mapped_spellings() -> None:
    networks = NetworkSet.parse(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert ipaddress.ip_address("10.200.0.1") in networks
    assert "10.200.0.1" in networks
    assert ipaddress.ip_address("::ffff:10.0.0.1") in networks
    assert "::ffff:10.0.0.1" in networks
    assert "2001:db8:ffff::1" in networks
    assert "192.0.2.7" in networks
    assert "192.0.2.8" not in networks
    assert "11.0.0.1" not in networks
    assert "2001:db9::1" not in networks


@pytest.mark.parametrize("value", ["010.0.0.1", "10.0.0.1 ", "", b"10.0.0.1", 167772161, 1.5, []])
def test_things_that_are_not_strict_addresses_are_never_members(value: Any) -> None:
    assert value not in NetworkSet.parse(["0.0.0.0/0", "::/0"])


def test_none_means_a_unix_socket_and_is_a_member_only_with_the_unix_word() -> None:
    assert None in NetworkSet.parse(["unix"])
    assert None in NetworkSet.parse([" UNIX "])
    assert None not in NetworkSet.parse(["127.0.0.1"])
    assert "127.0.0.1" not in NetworkSet.parse(["unix"])


def test_every_bad_entry_is_reported_with_its_index() -> None:
    entries: list[Any] = ["10.0.0.0/8", "10.0.0.5/24", "::1", "proxy.lan", 42, "*"]
    with pytest.raises(NetworkSetError) as info:
        NetworkSet.parse(entries)
    problems = info.value.problems
    assert [index for index, _ in problems] == [1, 3, 4, 5]
    assert "host bits set (did you mean '10.0.0.0/24'?)" in problems[0][1]
    assert "is a host name" in problems[1][1]
    assert problems[2][1] == "42 is not a string"
    assert "'0.0.0.0/0' and '::/0'" in problems[3][1]
    assert str(info.value).startswith("[1]: '10.0.0.5/24' has host bits set")
    assert isinstance(info.value, ValueError)


def test_unix_word_is_refused_where_it_means_nothing() -> None:
    with pytest.raises(NetworkSetError) as info:
        NetworkSet.parse(["192.168.0.0/16", "unix"], allow_unix_word=False)
    assert info.value.problems == [(1, "'unix' is only meaningful in proxy.trusted_proxies")]


@pytest.mark.parametrize("entries", ["10.0.0.0/8", b"10.0.0.0/8", None, 10])
def test_a_single_value_instead_of_a_list_is_a_type_error(entries: Any) -> None:
    with pytest.raises(TypeError, match="expected a list of IP addresses or CIDR networks"):
        NetworkSet.parse(entries)


def test_constructor_takes_network_objects_only() -> None:
    with pytest.raises(TypeError, match=r"use NetworkSet\.parse"):
        NetworkSet(["10.0.0.0/8"])  # type: ignore[list-item]


def test_constructor_folds_ipv4_mapped_networks_into_ipv4() -> None:
    networks = NetworkSet([ipaddress.ip_network("::ffff:10.0.0.0/104")])
    assert networks.networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert "10.1.2.3" in networks


def test_match_returns_the_narrowest_network() -> None:
    networks = NetworkSet.parse(
        [
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.1.2.3",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8:1::/48",
        ]
    )
    assert str(networks.match("10.1.2.3")) == "10.1.2.3/32"
    assert str(networks.match("10.1.2.4")) == "10.1.2.0/24"
    assert str(networks.match("10.1.3.1")) == "10.1.0.0/16"
    assert str(networks.match("10.2.0.1")) == "10.0.0.0/8"
    assert str(networks.match("11.0.0.1")) == "0.0.0.0/0"
    assert str(networks.match("::ffff:10.1.2.3")) == "10.1.2.3/32"
    assert str(networks.match(ipaddress.ip_address("2001:db8:1::9"))) == "2001:db8:1::/48"
    assert networks.match("2001:db9::1") is None
    assert networks.match("not an address") is None


def test_value_behaviour() -> None:
    first = NetworkSet.parse(["10.0.0.0/8", "10.0.0.0/8", "::1", "unix"])
    second = NetworkSet.parse(["unix", "::1/128", "10.0.0.0/8"])
    assert first == second
    assert hash(first) == hash(second)
    assert len(first) == 3  # duplicates collapse; "unix" counts
    assert [str(n) for n in first] == ["10.0.0.0/8", "::1/128"]
    assert first != NetworkSet.parse(["10.0.0.0/8", "::1"])
    assert not NetworkSet()
    assert NetworkSet.parse(["unix"])
    many = NetworkSet.parse([f"10.0.{i}.0/24" for i in range(20)])
    assert repr(many).startswith("NetworkSet([10.0.0.0/24, 10.0.1.0/24,")
    assert "... 15 more" in repr(many)


# --- property: thousands of mixed networks agree with a naive linear scan


def _random_networks(rng: random.Random, count: int) -> list[Network]:
    networks: list[Network] = []
    for _ in range(count):
        if rng.random() < 0.3:
            prefix = rng.choice([0, 16, 32, 48, 56, 64, 96, 112, 127, 128])
            value = (0x20010DB8 << 96) | rng.getrandbits(96) if prefix else rng.getrandbits(128)
            networks.append(ipaddress.IPv6Network((value, prefix), strict=False))
        else:
            prefix = rng.choice([8, 12, 16, 20, 24, 24, 24, 28, 30, 32, 32, 32, 32])
            value = (10 << 24) | rng.getrandbits(24) if rng.random() < 0.7 else rng.getrandbits(32)
            networks.append(ipaddress.IPv4Network((value, prefix), strict=False))
    return networks


def _probes(rng: random.Random, networks: list[Network], count: int) -> list[Any]:
    probes: list[Any] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:  # inside a configured network, often at its edges
            net = rng.choice(networks)
            offset = rng.choice([0, net.num_addresses - 1, rng.randrange(net.num_addresses)])
            probes.append(net.network_address + offset)
        elif roll < 0.75:
            probes.append(ipaddress.IPv4Address((10 << 24) | rng.getrandbits(24)))
        else:
            probes.append(ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96)))
    return probes


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1000, 3000))
def test_thousands_of_mixed_networks_agree_with_a_linear_scan(seed: int, count: int) -> None:
    rng = random.Random(seed)
    networks = _random_networks(rng, count)
    indexed = NetworkSet(networks)
    for probe in _probes(rng, networks, 300):
        containing = [n for n in networks if n.version == probe.version and probe in n]
        narrowest = max(containing, key=lambda n: n.prefixlen) if containing else None
        assert (probe in indexed) is bool(containing)
        assert indexed.match(probe) == narrowest
        assert indexed.match(str(probe)) == narrowest


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=30), st.integers(0, 2**32 - 1))
def test_mapped_spelling_of_any_address_matches_like_the_ipv4(
    values: list[int], probe_value: int
) -> None:
    networks = NetworkSet([ipaddress.IPv4Network((v, 24), strict=False) for v in values])
    probe = ipaddress.IPv4Address(probe_value)
    mapped = parse_ip(f"::ffff:{probe}")
    assert mapped == probe
    assert networks.match(ipaddress.IPv6Address(f"::ffff:{probe}")) == networks.match(probe)
    assert (f"::ffff:{probe}" in networks) is (probe in networks)

"""Address, endpoint, network and Host parsing: strict, normalised, and never a crash."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.net import is_loopback, parse_endpoint, parse_host, parse_ip, parse_network
from edge.net.address import clip

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("203.0.113.7", V4("203.0.113.7"), id="ipv4"),
        pytest.param("0.0.0.0", V4("0.0.0.0"), id="ipv4_zero"),
        pytest.param("255.255.255.255", V4("255.255.255.255"), id="ipv4_broadcast"),
        pytest.param("2001:db8::7", V6("2001:db8::7"), id="ipv6"),
        pytest.param("2001:DB8:0:0:0:0:0:7", V6("2001:db8::7"), id="ipv6_uppercase_long_form"),
        pytest.param("::1", V6("::1"), id="ipv6_loopback"),
        pytest.param("::ffff:203.0.113.7", V4("203.0.113.7"), id="mapped_dotted_is_ipv4"),
        pytest.param("::ffff:cb00:7107", V4("203.0.113.7"), id="mapped_hex_is_ipv4"),
        pytest.param("::203.0.113.7", V6("::cb00:7107"), id="ipv4_compatible_stays_ipv6"),
    ],
)
def test_parse_ip_accepts_and_normalises(text: str, expected: Any) -> None:
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("010.0.0.1", id="leading_zero_octal_ambiguity"),
        pytest.param("1.2.3.04", id="leading_zero_last_octet"),
        pytest.param("1.2.3", id="three_octets"),
        pytest.param("127.1", id="short_form"),
        pytest.param("1.2.3.4.5", id="five_octets"),
        pytest.param("256.1.1.1", id="octet_above_255"),
        pytest.param("0x7f.0.0.1", id="hex_octet"),
        pytest.param("2130706433", id="integer_form"),
        pytest.param(" 1.2.3.4", id="leading_space"),
        pytest.param("1.2.3.4\n", id="trailing_newline"),
        pytest.param("1.2.3.4.", id="trailing_dot"),
        pytest.param("\uff11.2.3.4", id="fullwidth_digit"),
        pytest.param("\u0661.2.3.4", id="arabic_indic_digit"),
        pytest.param("fe80::1%eth0", id="zone_id"),
        pytest.param("::ffff:01.2.3.4", id="mapped_with_leading_zero"),
        pytest.param("1::2::3", id="two_double_colons"),
        pytest.param("[::1]", id="brackets_are_not_an_address"),
        pytest.param("", id="empty"),
        pytest.param("1" * 46, id="longer_than_any_address"),
        pytest.param("localhost", id="host_name"),
    ],
)
def test_parse_ip_rejects(text: str) -> None:
    assert parse_ip(text) is None


@pytest.mark.parametrize("value", [None, b"1.2.3.4", 16909060, ["1.2.3.4"]], ids=repr)
def test_parse_ip_of_a_non_string_is_none(value: Any) -> None:
    assert parse_ip(value) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("203.0.113.7", ("203.0.113.7", None), id="ipv4"),
        pytest.param("203.0.113.7:4711", ("203.0.113.7", 4711), id="ipv4_port"),
        pytest.param("203.0.113.7:0", ("203.0.113.7", 0), id="port_zero"),
        pytest.param("203.0.113.7:65535", ("203.0.113.7", 65535), id="port_max"),
        pytest.param("2001:db8::7", ("2001:db8::7", None), id="bare_ipv6"),
        pytest.param("[2001:db8::7]", ("2001:db8::7", None), id="bracketed_ipv6"),
        pytest.param("[2001:db8::7]:443", ("2001:db8::7", 443), id="bracketed_ipv6_port"),
        pytest.param("[::ffff:1.2.3.4]:80", ("1.2.3.4", 80), id="bracketed_mapped_port"),
        pytest.param("::ffff:1.2.3.4", ("1.2.3.4", None), id="bare_mapped"),
    ],
)
def test_parse_endpoint_accepts(text: str, expected: tuple[str, int | None]) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint is not None
    assert (str(endpoint[0]), endpoint[1]) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("203.0.113.7:", id="empty_port"),
        pytest.param("203.0.113.7:65536", id="port_too_large"),
        pytest.param("203.0.113.7:123456", id="six_digit_port"),
        pytest.param("203.0.113.7:-1", id="negative_port"),
        pytest.param("203.0.113.7:+80", id="signed_port"),
        pytest.param("203.0.113.7:http", id="named_port"),
        pytest.param("203.0.113.7:\uff18\uff10", id="fullwidth_port"),
        pytest.param("[203.0.113.7]:80", id="bracketed_ipv4"),
        pytest.param("[2001:db8::7", id="unclosed_bracket"),
        pytest.param("[2001:db8::7]443", id="port_without_colon"),
        pytest.param("[2001:db8::7]:", id="bracketed_empty_port"),
        pytest.param("[fe80::1%eth0]:80", id="bracketed_zone_id"),
        pytest.param('"203.0.113.7"', id="quoted"),
        pytest.param("unknown", id="unknown"),
        pytest.param("_hidden", id="obfuscated"),
        pytest.param("", id="empty"),
        pytest.param("host.example:80", id="name_with_port"),
    ],
)
def test_parse_endpoint_rejects(text: str) -> None:
    assert parse_endpoint(text) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("edge.example.com", ("edge.example.com", None), id="name"),
        pytest.param("Edge.Example.COM:8443", ("edge.example.com", 8443), id="case_and_port"),
        pytest.param("localhost.", ("localhost", None), id="trailing_dot"),
        pytest.param("my_box.lan", ("my_box.lan", None), id="underscore"),
        pytest.param("192.168.1.5:18789", ("192.168.1.5", 18789), id="ipv4_port"),
        pytest.param("[::1]:18789", ("::1", 18789), id="bracketed_ipv6"),
        pytest.param("[::ffff:127.0.0.1]", ("127.0.0.1", None), id="bracketed_mapped"),
        pytest.param(" localhost\t", ("localhost", None), id="surrounding_whitespace"),
        pytest.param("a" * 63 + ".example", ("a" * 63 + ".example", None), id="63_char_label"),
    ],
)
def test_parse_host_accepts(value: str, expected: tuple[str, int | None]) -> None:
    assert parse_host(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("::1", id="bare_ipv6"),
        pytest.param("[127.0.0.1]", id="bracketed_ipv4"),
        pytest.param("1.2.3", id="numeric_last_label_would_be_ipv4_to_a_browser"),
        pytest.param("0x7f.1", id="hex_last_label"),
        pytest.param("010.0.0.1", id="leading_zero_ipv4"),
        pytest.param("bad host", id="space"),
        pytest.param("evil.example/path", id="slash"),
        pytest.param("user@evil.example", id="user_info"),
        pytest.param("-edge.example", id="leading_hyphen"),
        pytest.param("edge..example", id="empty_label"),
        pytest.param("a" * 64 + ".example", id="64_char_label"),
        pytest.param("edge.example:", id="empty_port"),
        pytest.param("edge.example:99999", id="port_too_large"),
        pytest.param("édge.example", id="non_ascii"),
        pytest.param("x" * 300, id="too_long"),
    ],
)
def test_parse_host_rejects(value: str) -> None:
    assert parse_host(value) is None


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("128.0.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("::2", False),
        ("10.0.0.1", False),
    ],
)
def test_is_loopback(text: str, loopback: bool) -> None:
    assert is_loopback(ipaddress.ip_address(text)) is loopback


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("10.0.0.0/8", "10.0.0.0/8", id="ipv4_cidr"),
        pytest.param("10.0.0.5", "10.0.0.5/32", id="bare_ipv4_is_a_host_network"),
        pytest.param("2001:db8::/32", "2001:db8::/32", id="ipv6_cidr"),
        pytest.param("::1", "::1/128", id="bare_ipv6_is_a_host_network"),
        pytest.param("  192.168.0.0/16\n", "192.168.0.0/16", id="surrounding_whitespace_forgiven"),
        pytest.param("0.0.0.0/0", "0.0.0.0/0", id="everything_ipv4"),
        pytest.param("::ffff:10.0.0.0/104", "10.0.0.0/8", id="mapped_network_is_ipv4"),
        pytest.param("::ffff:10.0.0.1", "10.0.0.1/32", id="mapped_address_is_ipv4"),
        pytest.param("2001:DB8::/32", "2001:db8::/32", id="uppercase_ipv6"),
    ],
)
def test_parse_network_accepts(text: str, expected: str) -> None:
    assert str(parse_network(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "10.0.0.5/24",
            "'10.0.0.5/24' has host bits set (did you mean '10.0.0.0/24'?)",
            id="host_bits",
        ),
        pytest.param(
            "2001:db8::1/32",
            "has host bits set (did you mean '2001:db8::/32'?)",
            id="host_bits_ipv6",
        ),
        pytest.param("::ffff:10.0.0.1/120", "did you mean '10.0.0.0/24'?", id="host_bits_mapped"),
        pytest.param("", "'' is empty; expected an IP address or CIDR network", id="empty"),
        pytest.param("*", "write '0.0.0.0/0' and '::/0' (trusting everyone", id="star"),
        pytest.param(
            "localhost",
            "is a host name, not an IP address or CIDR network; names are "
            "not resolved, write the address (use '127.0.0.1' or '::1')",
            id="localhost",
        ),
        pytest.param("proxy.example.com", "'proxy.example.com' is a host name", id="host_name"),
        pytest.param(
            "10.0.0.0/255.0.0.0",
            "uses a netmask; write a prefix length instead (did you mean '10.0.0.0/8'?)",
            id="netmask",
        ),
        pytest.param(
            "10.0.0.0/33",
            "invalid prefix length: IPv4 prefixes are 0 to 32",
            id="ipv4_prefix_too_long",
        ),
        pytest.param(
            "2001:db8::/129",
            "invalid prefix length: IPv6 prefixes are 0 to 128",
            id="ipv6_prefix_too_long",
        ),
        pytest.param(
            "10.0.0.0/08", "leading zero in its prefix length; write '/8'", id="prefix_leading_zero"
        ),
        pytest.param(
            "010.0.0.0/8",
            "IPv4 octet with a leading zero, which some tools read as octal",
            id="octet_leading_zero",
        ),
        pytest.param("fe80::/10%eth0", "zone id", id="zone_id"),
        pytest.param(
            "10.0.0.1 10.0.0.2",
            "contains whitespace; write one address or network per entry",
            id="two_in_one",
        ),
        pytest.param(
            "10.0.0.0/",
            "has an invalid prefix ''; write a prefix length such as '/24'",
            id="empty_prefix",
        ),
        pytest.param("10.0.0.0/x", "invalid prefix 'x'", id="letter_prefix"),
        pytest.param("10.0.0.0/" + "9" * 5000, "invalid prefix length", id="absurd_prefix"),
        pytest.param("unix", "(a unix-socket peer) is not accepted in this list", id="unix"),
        pytest.param("1.2.3", "'1.2.3' is not an IP address or CIDR network", id="three_octets"),
        pytest.param("1.2.3.4/24/8", "invalid prefix", id="two_slashes"),
    ],
)
def test_parse_network_errors_name_the_entry_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_network(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert len(str(info.value)) < 250


@pytest.mark.parametrize("value", [None, 10, b"10.0.0.0/8"], ids=repr)
def test_parse_network_of_a_non_string_says_so(value: Any) -> None:
    with pytest.raises(ValueError, match="expected a string"):
        parse_network(value)


def test_errors_about_huge_input_stay_short() -> None:
    with pytest.raises(ValueError) as info:
        parse_network("x" * 1_000_000)
    assert len(str(info.value)) < 250


def test_clip_keeps_short_text_and_marks_cut_text() -> None:
    assert clip("short") == "short"
    clipped = clip("y" * 500, 40)
    assert len(clipped) == 40
    assert clipped.endswith("...")


# --- properties

ipv4s = st.integers(0, 2**32 - 1).map(V4)
ipv6s = st.integers(0, 2**128 - 1).map(V6)


@given(ipv4s)
def test_every_ipv4_round_trips_through_its_text_and_its_mapped_spelling(ip: V4) -> None:
    assert parse_ip(str(ip)) == ip
    assert parse_ip(f"::ffff:{ip}") == ip
    assert parse_ip(str(V6(0xFFFF00000000 | int(ip)))) == ip


@given(ipv6s)
def test_every_ipv6_round_trips_or_folds_to_ipv4(ip: V6) -> None:
    parsed = parse_ip(str(ip))
    expected = ip.ipv4_mapped if ip.ipv4_mapped is not None else ip
    assert parsed == expected
    assert parse_ip(ip.exploded.upper()) == expected


@given(st.one_of(ipv4s, ipv6s), st.integers(0, 65535))
def test_endpoints_round_trip(ip: Any, port: int) -> None:
    text = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
    endpoint = parse_endpoint(text)
    assert endpoint is not None
    expected = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped is not None else ip
    assert endpoint == (expected, port)


@given(st.one_of(ipv4s.map(lambda a: (a, 32)), ipv6s.map(lambda a: (a, 128))), st.data())
def test_networks_round_trip(address_and_bits: tuple[Any, int], data: st.DataObject) -> None:
    address, bits = address_and_bits
    prefix = data.draw(st.integers(0, bits))
    network = ipaddress.ip_network(
        (int(address), prefix) if bits == 32 else (address, prefix), strict=False
    )
    parsed = parse_network(str(network))
    if (
        isinstance(network, ipaddress.IPv6Network)
        and prefix >= 96
        and network.subnet_of(ipaddress.IPv6Network("::ffff:0:0/96"))
    ):
        assert parsed.version == 4
    else:
        assert parsed == network


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_parsers_never_raise_anything_but_value_error_on_text(text: str) -> None:
    parse_ip(text)
    parse_endpoint(text)
    parse_host(text)
    try:
        parse_network(text)
    except ValueError as error:
        assert str(error)

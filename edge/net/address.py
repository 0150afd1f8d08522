"""Strict parsing of IP addresses, endpoints, networks and Host values.

Everything that reaches the trust decision passes through here, so the rules
are deliberately narrow: IPv4 with leading zeros is rejected (``010.0.0.1`` is
octal to some parsers and decimal to others), IPv6 zone ids and embedded
whitespace are rejected, and IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is folded
into IPv4 so that one client never has two spellings.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# One address as the hot path carries it: (version, integer value, canonical text).
Address = tuple[int, int, str]

# "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" is the longest address text.
_MAX_ADDRESS_LENGTH = 45
_MAX_PORT_DIGITS = 5
_MAX_HOSTNAME_LENGTH = 253
_MAX_HOST_VALUE_LENGTH = _MAX_HOSTNAME_LENGTH + len("[]:65535")
_V4_MAPPED_NETWORK = ipaddress.IPv6Network("::ffff:0:0/96")

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Strict dotted quad: no leading zeros (octal to some parsers), ASCII digits only.
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_HOSTNAME = re.compile(
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_LOOKS_LIKE_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]*[A-Za-z][A-Za-z0-9_.-]*")


def address_of(text: str) -> Address | None:
    """``(version, integer, canonical text)`` of a strict IP literal, or None.

    The hot path's form of :func:`parse_ip`: no ``ipaddress`` object is built
    for IPv4, and a strict dotted quad is already its own canonical text.
    """
    if not isinstance(text, str) or not 0 < len(text) <= _MAX_ADDRESS_LENGTH:
        return None
    return _address_of(text)


# Proxy addresses recur on every request; the cache is bounded and only ever
# holds strings of at most 45 characters (checked above).
@functools.lru_cache(maxsize=4096)
def _address_of(text: str) -> Address | None:
    if ":" not in text:
        if _IPV4.fullmatch(text) is None:
            return None
        return 4, int.from_bytes(socket.inet_aton(text), "big"), text
    if "%" in text or not text.isascii():
        return None
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    if mapped is not None:
        return 4, int(mapped), str(mapped)
    return 6, int(address), str(address)


def ip_of(address: Address) -> IPAddress:
    version, value, _ = address
    if version == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def address_is_loopback(address: Address) -> bool:
    """127.0.0.0/8 or ::1, on the hot path's form."""
    version, value, _ = address
    return value >> 24 == 127 if version == 4 else value == 1


def parse_ip(text: str) -> IPAddress | None:
    """Return the address ``text`` spells, or None when it is not a strict IP literal.

    ``::ffff:1.2.3.4`` becomes ``IPv4Address('1.2.3.4')``; leading zeros, zone ids,
    surrounding or embedded whitespace and anything that is not a string give None.
    """
    address = address_of(text)
    return None if address is None else ip_of(address)


def _parse_port(text: str) -> int | None:
    if not (0 < len(text) <= _MAX_PORT_DIGITS and text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if port <= 65535 else None


def endpoint_of(text: str) -> tuple[Address, int | None] | None:
    """:func:`parse_endpoint` in the hot path's form."""
    if not isinstance(text, str) or not text:
        return None
    if text[0] == "[":
        close = text.find("]")
        if close < 0:
            return None
        inside = text[1:close]
        if ":" not in inside:
            return None
        address = address_of(inside)
        if address is None:
            return None
        rest = text[close + 1 :]
        if not rest:
            return address, None
        if rest[0] != ":":
            return None
        port = _parse_port(rest[1:])
        return None if port is None else (address, port)
    colons = text.count(":")
    if colons == 1:
        host, _, port_text = text.partition(":")
        address = address_of(host)
        port = _parse_port(port_text)
        if address is None or port is None:
            return None
        return address, port
    # no colon: IPv4; two or more: bare IPv6, which cannot carry a port
    address = address_of(text)
    return None if address is None else (address, None)


def parse_endpoint(text: str) -> tuple[IPAddress, int | None] | None:
    """Parse ``ip``, ``ip:port``, ``[v6]`` or ``[v6]:port`` (bare IPv6 has no port).

    Returns None for anything else, including bracketed IPv4, an empty or
    non-numeric port, and ports above 65535.
    """
    endpoint = endpoint_of(text)
    return None if endpoint is None else (ip_of(endpoint[0]), endpoint[1])


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, so hostile input cannot flood messages and logs."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_loopback(ip: IPAddress) -> bool:
    """True for 127.0.0.0/8 and ::1 (and their IPv4-mapped spelling)."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped.is_loopback
    return ip.is_loopback


def unmap_network(network: ipaddress.IPv6Network) -> IPNetwork:
    """``::ffff:a.b.c.d/n`` (n >= 96) is the IPv4 ``a.b.c.d/(n-96)``: one spelling per network."""
    if network.prefixlen >= 96 and network.subnet_of(_V4_MAPPED_NETWORK):
        low_bits = int(network.network_address) & 0xFFFFFFFF
        return ipaddress.IPv4Network((low_bits, network.prefixlen - 96))
    return network


def _network_error(text: str, original: object) -> str:
    """Explain, in words an operator can act on, why ``text`` is not a network."""
    quoted = clip(repr(original))
    if not text:
        return f"{quoted} is empty; expected an IP address or CIDR network such as '10.0.0.0/8'"
    if text == "*":
        return (
            f"{quoted} is not an IP address or CIDR network; to match every address write "
            "'0.0.0.0/0' and '::/0' (trusting everyone lets any client spoof its address)"
        )
    if text.lower() == "unix":
        return f"{quoted} (a unix-socket peer) is not accepted in this list"
    if "%" in text:
        return f"{quoted} has an IPv6 zone id ('%...'); zone ids are not supported, remove it"
    if any(character.isspace() for character in text):
        return f"{quoted} contains whitespace; write one address or network per entry"
    address_text, slash, prefix_text = text.partition("/")
    if slash and not (prefix_text.isascii() and prefix_text.isdigit()):
        try:
            suggestion = ipaddress.ip_network(text, strict=False)
        except ValueError:
            shown = clip(repr(prefix_text), 20)
            return f"{quoted} has an invalid prefix {shown}; write a prefix length such as '/24'"
        return (
            f"{quoted} uses a netmask; write a prefix length instead "
            f"(did you mean {str(suggestion)!r}?)"
        )
    if ":" not in address_text and "." in address_text:
        octets = address_text.split(".")
        if any(len(octet) > 1 and octet.startswith("0") and octet.isdigit() for octet in octets):
            return (
                f"{quoted} has an IPv4 octet with a leading zero, which some tools read as "
                "octal; remove the leading zeros"
            )
    if _LOOKS_LIKE_HOSTNAME.fullmatch(address_text):
        hint = " (use '127.0.0.1' or '::1')" if address_text.lower() == "localhost" else ""
        return (
            f"{quoted} is a host name, not an IP address or CIDR network; names are not "
            f"resolved, write the address{hint}"
        )
    if parse_ip(address_text) is None:
        return f"{quoted} is not an IP address or CIDR network"
    address = parse_ip(address_text)
    max_prefix = (
        32 if isinstance(address, ipaddress.IPv4Address) and ":" not in address_text else 128
    )
    # more than three digits is out of range whatever they say (and int() of
    # thousands of digits raises)
    prefix = (int(prefix_text) if len(prefix_text) <= 3 else max_prefix + 1) if slash else 0
    if prefix > max_prefix:
        family = "IPv4" if max_prefix == 32 else "IPv6"
        return f"{quoted} has an invalid prefix length: {family} prefixes are 0 to {max_prefix}"
    if slash and len(prefix_text) > 1 and prefix_text[0] == "0":
        return f"{quoted} has a leading zero in its prefix length; write '/{prefix}'"
    try:
        suggestion = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{quoted} is not an IP address or CIDR network"
    if isinstance(suggestion, ipaddress.IPv6Network):
        suggestion = unmap_network(suggestion)
    return f"{quoted} has host bits set (did you mean {str(suggestion)!r}?)"


def parse_network(text: str) -> IPNetwork:
    """Parse a configured address or CIDR network; a bare address is a /32 or /128.

    Surrounding whitespace is forgiven. IPv4-mapped IPv6 networks become IPv4
    networks, matching how addresses are normalised. Raises ValueError whose
    message quotes the input and says how to fix it.
    """
    original: object = text
    if not isinstance(text, str):
        raise ValueError(
            f"{clip(repr(text))} is not an IP address or CIDR network (expected a string)"
        )
    text = text.strip()
    address_text, slash, prefix_text = text.partition("/")
    address = parse_ip(address_text)
    if address is None or (slash and not _is_plain_prefix(prefix_text)):
        raise ValueError(_network_error(text, original))
    is_v6_text = ":" in address_text
    if not slash:
        if isinstance(address, ipaddress.IPv4Address):
            return ipaddress.IPv4Network(address)
        return ipaddress.IPv6Network(address)
    prefix = int(prefix_text)
    try:
        if is_v6_text:
            return unmap_network(
                ipaddress.IPv6Network(f"{ipaddress.IPv6Address(address_text)}/{prefix}")
            )
        return ipaddress.IPv4Network(f"{address_text}/{prefix}")
    except ValueError:
        raise ValueError(_network_error(text, original)) from None


def _is_plain_prefix(text: str) -> bool:
    return (
        0 < len(text) <= 3
        and text.isascii()
        and text.isdigit()
        and (len(text) == 1 or text[0] != "0")
    )


def _is_valid_hostname(name: str) -> bool:
    if not name or len(name) > _MAX_HOSTNAME_LENGTH or not _HOSTNAME.fullmatch(name):
        return False
    # WHATWG URL parsing reads a host whose last label is numeric as an IPv4
    # address (``1.2.3``, ``0x7f.1``); such a name is only valid as a real literal.
    last_label = name.rsplit(".", 1)[-1]
    return not _NUMERIC_LABEL.fullmatch(last_label)


def parse_host(value: str) -> tuple[str, int | None] | None:
    """Split a Host or X-Forwarded-Host value into (host, port).

    The host is lowercased, loses one trailing dot, and is an IP literal without
    brackets (normalised, so ``[::ffff:127.0.0.1]`` gives ``127.0.0.1``) or a DNS
    name. Returns None for an empty value, bad characters, a bare IPv6 address,
    a numeric-looking name that is not a strict IPv4 literal, or a bad port.
    """
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    if not value or len(value) > _MAX_HOST_VALUE_LENGTH or not value.isascii():
        return None
    return _parse_host(value)


# Host values repeat from request to request; the cache is bounded, and only
# short ASCII values (checked above) ever reach it.
@functools.lru_cache(maxsize=1024)
def _parse_host(value: str) -> tuple[str, int | None] | None:
    port: int | None = None
    if value[0] == "[":
        close = value.find("]")
        if close < 0:
            return None
        inside = value[1:close]
        rest = value[close + 1 :]
        if rest:
            if rest[0] != ":":
                return None
            port = _parse_port(rest[1:])
            if port is None:
                return None
        if ":" not in inside:
            return None
        address = address_of(inside)
        return None if address is None else (address[2], port)
    host, colon, port_text = value.partition(":")
    if colon:
        port = _parse_port(port_text)
        if port is None:
            return None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if _IPV4.fullmatch(host) is not None:
        return host, port
    if not _is_valid_hostname(host):
        return None
    return host, port

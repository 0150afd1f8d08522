"""The key a client is throttled under: its IPv4 address, or its IPv6 prefix.

One IPv6 subscriber usually holds a whole /64 and can pick a new address in it
for every request, so keying lockouts and caps by the full IPv6 address would
give it 2**64 fresh budgets. IPv4-mapped IPv6 is the IPv4 client it spells.
The lockout, the pending-request cap per client and the unauthenticated-socket
cap all call this one function, so no limit can be escaped by a spelling
another limit does not share.
"""

from __future__ import annotations

import ipaddress

from edge.net.address import address_of

UNKNOWN_CLIENT = "unknown"  # clients without an address (a unix socket peer) share one key
DEFAULT_IPV6_PREFIX = 64


def client_key(client_ip: str | None, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """``198.51.100.7``, ``2001:db8:1:2::/64``, or ``unknown`` for no (or no valid) address."""
    if client_ip is None:
        return UNKNOWN_CLIENT
    address = address_of(client_ip)
    if address is None:
        return UNKNOWN_CLIENT
    version, value, text = address
    if version == 4 or ipv6_prefix >= 128:
        return text
    host_bits = 128 - ipv6_prefix
    network = ipaddress.IPv6Address(value >> host_bits << host_bits)
    return f"{network}/{ipv6_prefix}"

"""Sets of IP networks with a lookup cost that does not grow with their number.

Networks are grouped by prefix length; membership masks the address once per
distinct prefix length present and looks the result up in a dict. 10,000
networks of a few lengths cost what one network costs (uvicorn's
``_TrustedHosts`` scans its networks one by one instead).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence

from edge.net.address import (
    Address,
    IPNetwork,
    address_of,
    parse_network,
    unmap_network,
)

UNIX_WORD = "unix"

# A configured network and its text, made once so explanations cost nothing per request.
Found = tuple[IPNetwork, str]
# One entry per distinct prefix length, longest first: (mask, network address -> found).
_Index = tuple[tuple[int, dict[int, Found]], ...]


class NetworkSetError(ValueError):
    """Bad entries, each as (index, message); all of them, not just the first."""

    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"[{i}]: {m}" for i, m in problems))


def _index(networks: list[IPNetwork], bits: int) -> _Index:
    by_length: dict[int, dict[int, Found]] = {}
    for net in networks:
        by_length.setdefault(net.prefixlen, {})[int(net.network_address)] = (net, str(net))
    full = (1 << bits) - 1
    # most specific first, so a lookup finds the narrowest network
    return tuple(
        ((full >> (bits - length)) << (bits - length), addresses)
        for length, addresses in sorted(by_length.items(), reverse=True)
    )


class NetworkSet:
    """Immutable set of networks; ``ip in s`` costs one dict lookup per prefix length."""

    __slots__ = ("_allow_unix", "_networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork] = (), *, allow_unix: bool = False) -> None:
        normalised: set[IPNetwork] = set()
        for net in networks:
            if isinstance(net, ipaddress.IPv6Network):
                normalised.add(unmap_network(net))
            elif isinstance(net, ipaddress.IPv4Network):
                normalised.add(net)
            else:
                raise TypeError(
                    f"{net!r} is not an IPv4Network or IPv6Network; "
                    "use NetworkSet.parse() for text entries"
                )
        unique = sorted(normalised, key=lambda n: (n.version, n.prefixlen, int(n.network_address)))
        self._networks: tuple[IPNetwork, ...] = tuple(unique)
        self._allow_unix = bool(allow_unix)
        self._v4 = _index([n for n in unique if n.version == 4], 32)
        self._v6 = _index([n for n in unique if n.version == 6], 128)

    @classmethod
    def parse(cls, entries: Sequence[str], *, allow_unix_word: bool = True) -> NetworkSet:
        """Build a set from configuration text; every bad entry is reported, by index.

        ``unix`` (any case) trusts unix-socket peers when ``allow_unix_word`` is set.
        """
        if isinstance(entries, str | bytes) or not isinstance(entries, Iterable):
            raise TypeError(
                f"expected a list of IP addresses or CIDR networks, got {type(entries).__name__} "
                f"{entries!r:.80}"
            )
        networks: list[IPNetwork] = []
        problems: list[tuple[int, str]] = []
        allow_unix = False
        for index, entry in enumerate(entries):
            if not isinstance(entry, str):
                problems.append((index, f"{entry!r:.80} is not a string"))
                continue
            if entry.strip().lower() == UNIX_WORD:
                if allow_unix_word:
                    allow_unix = True
                else:
                    problems.append((index, "'unix' is only meaningful in proxy.trusted_proxies"))
                continue
            try:
                networks.append(parse_network(entry))
            except ValueError as exc:
                problems.append((index, str(exc)))
        if problems:
            raise NetworkSetError(problems)
        return cls(networks, allow_unix=allow_unix)

    def find(self, address: Address) -> Found | None:
        """The narrowest network containing ``address`` (hot-path form), and its text."""
        version, value, _ = address
        for mask, addresses in self._v4 if version == 4 else self._v6:
            found = addresses.get(value & mask)
            if found is not None:
                return found
        return None

    def __contains__(self, ip: object) -> bool:
        """``None`` stands for a unix-socket peer; text is parsed strictly; anything else is out."""
        if ip is None:
            return self._allow_unix
        return self.match(ip) is not None

    def match(self, ip: object) -> IPNetwork | None:
        """The narrowest configured network containing ``ip``, or None.

        Accepts an address object or its text; IPv4-mapped IPv6 is looked up as IPv4.
        """
        if isinstance(ip, ipaddress.IPv4Address):
            found = self.find((4, int(ip), ""))
        elif isinstance(ip, ipaddress.IPv6Address):
            mapped = ip.ipv4_mapped
            found = self.find((4, int(mapped), "") if mapped is not None else (6, int(ip), ""))
        elif isinstance(ip, str):
            address = address_of(ip)
            found = None if address is None else self.find(address)
        else:
            return None
        return None if found is None else found[0]

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        return self._networks

    @property
    def allow_unix(self) -> bool:
        return self._allow_unix

    def __len__(self) -> int:
        return len(self._networks) + (1 if self._allow_unix else 0)

    def __bool__(self) -> bool:
        return bool(self._networks) or self._allow_unix

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self._networks)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NetworkSet)
            and self._networks == other._networks
            and self._allow_unix == other._allow_unix
        )

    def __hash__(self) -> int:
        return hash((self._networks, self._allow_unix))

    def __repr__(self) -> str:
        items = [str(n) for n in self._networks[:5]]
        more = f", ... {len(self._networks) - 5} more" if len(self._networks) > 5 else ""
        unix = ", unix" if self._allow_unix else ""
        return f"NetworkSet([{', '.join(items)}{more}{unix}])"

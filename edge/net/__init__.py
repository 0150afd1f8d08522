"""Client resolution: pure functions and frozen values, no I/O and no Starlette."""

from edge.net.address import (
    IPAddress,
    IPNetwork,
    is_loopback,
    parse_endpoint,
    parse_host,
    parse_ip,
    parse_network,
)
from edge.net.client_key import UNKNOWN_CLIENT, client_key
from edge.net.explain import describe
from edge.net.forwarded import ForwardedElement, parse_forwarded, split_x_forwarded_for
from edge.net.networks import NetworkSet, NetworkSetError
from edge.net.origin import is_same_origin, normalise_origin, own_origin
from edge.net.peer import NOT_LOOKED_UP, PeerOwner
from edge.net.resolve import Hop, Resolution, ResolverPolicy, resolve

__all__ = [
    "NOT_LOOKED_UP",
    "UNKNOWN_CLIENT",
    "ForwardedElement",
    "Hop",
    "IPAddress",
    "IPNetwork",
    "NetworkSet",
    "NetworkSetError",
    "PeerOwner",
    "Resolution",
    "ResolverPolicy",
    "client_key",
    "describe",
    "is_loopback",
    "is_same_origin",
    "normalise_origin",
    "own_origin",
    "parse_endpoint",
    "parse_forwarded",
    "parse_host",
    "parse_ip",
    "parse_network",
    "resolve",
    "split_x_forwarded_for",
]

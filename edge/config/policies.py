"""The values the gateway and the CLI decide with, built from settings in one place.

``edge serve``'s workers, ``edge explain`` and the management commands all
build their resolver and pairing policies here, so a setting means the same
thing wherever it is read. Kept out of ``edge.config`` itself so that loading
settings does not import the resolver or the pairing domain.
"""

from __future__ import annotations

from edge.config.models import Settings
from edge.net import NetworkSet, ResolverPolicy
from edge.pairing.service import PairingPolicy, RateLimitPolicy


def build_policy(settings: Settings) -> ResolverPolicy:
    """Who is a trusted proxy, who is local, which origins may open sockets."""
    return ResolverPolicy(
        trusted_proxies=NetworkSet.parse(settings.proxy.trusted_proxies),
        client_ip_headers=tuple(settings.proxy.client_ip_headers),
        local_loopback=settings.local.loopback,
        local_networks=NetworkSet.parse(settings.local.networks, allow_unix_word=False),
        local_hosts=frozenset(settings.local.hosts),
        peer_check=settings.local.peer_check,
        allowed_origins=frozenset(settings.auth.allowed_origins),
    )


def build_pairing_policy(settings: Settings) -> PairingPolicy:
    """The pairing caps, request lifetime, idle expiry and lockout rule."""
    rate = settings.auth.rate_limit
    return PairingPolicy(
        request_ttl=settings.pairing.request_ttl,
        max_pending=settings.pairing.max_pending,
        max_pending_per_client=settings.pairing.max_pending_per_client,
        device_idle_expiry=settings.pairing.device_idle_expiry,
        local_device_idle_expiry=settings.pairing.local_device_idle_expiry,
        decline_cooldown=settings.pairing.decline_cooldown,
        rate_limit=RateLimitPolicy(rate.failures, rate.window, rate.lockout, rate.ipv6_prefix),
    )


def build_metrics_networks(settings: Settings) -> NetworkSet:
    """The networks that may scrape ``/metrics`` without the bearer token."""
    return NetworkSet.parse(settings.metrics.allowed_networks, allow_unix_word=False)

"""Human explanation of a resolution, for ``edge explain`` and the troubleshooting docs."""

from __future__ import annotations

from edge.net.address import address_is_loopback, address_of
from edge.net.resolve import Resolution, ResolverPolicy

ANOMALY_HELP = {
    "untrusted_proxy_headers": (
        "proxy headers came from a peer that is not in proxy.trusted_proxies, so they were "
        "ignored. If that peer is your reverse proxy, add its address to proxy.trusted_proxies; "
        "if not, a client is trying to forge its address."
    ),
    "malformed_forwarded": (
        "an entry of the chain is not an address (unknown, obfuscated or garbled); the walk "
        "stopped at the last trusted hop. Make the proxy write real client addresses."
    ),
    "too_many_hops": (
        "the chain is longer than the walk limit; the client was taken as for a malformed entry. "
        "Make the proxy overwrite X-Forwarded-For (nginx: $remote_addr) instead of appending."
    ),
}

# The warning the gateway logs (rate-limited) when a request shows an anomaly.
ANOMALY_ADVICE = {
    "untrusted_proxy_headers": (
        "Received proxy headers from {peer}, which is not in proxy.trusted_proxies: they were "
        "ignored and the client is treated as {peer}. If {peer} is your reverse proxy, add it to "
        "proxy.trusted_proxies; otherwise a client is trying to forge its address."
    ),
    "malformed_forwarded": (
        "Malformed {header} chain from trusted proxy {peer}: the walk stopped at the last "
        "trusted address, which is treated as the client. If a proxy in proxy.trusted_proxies "
        "writes placeholders such as 'unknown' or obfuscated names, make it write addresses; "
        "if your proxy sets another header, list that one first in proxy.client_ip_headers "
        "(see `edge explain`)."
    ),
    "too_many_hops": (
        "Proxy chain from {peer} is longer than 64 hops: the walk stopped. A client may be "
        "stuffing {header}; make the proxy overwrite the header instead of appending to it, "
        "or list a header it sets alone (x-real-ip) first in proxy.client_ip_headers."
    ),
}


def describe(resolution: Resolution, policy: ResolverPolicy) -> str:
    """The walk, hop by hop, and the decision with the rule behind it, as plain text."""
    lines: list[str] = []
    trusted = "trusted" if resolution.trusted_peer else "not trusted"
    peer = resolution.peer_ip or "unix socket"
    port = f" port {resolution.peer_port}" if resolution.peer_port is not None else ""
    lines.append(f"peer      {peer}{port} ({trusted})")
    peer_address = address_of(resolution.peer_ip) if resolution.peer_ip is not None else None
    if resolution.peer_ip is None or (
        peer_address is not None and address_is_loopback(peer_address)
    ):
        # only a loopback or unix-socket peer can be direct, so only there does its owner count
        lines.append(f"owner     {resolution.peer_owner.describe()}")
        rule = (
            "the connection must belong to edge's own user"
            if resolution.peer_check == "uid"
            else "the loopback address alone decides (weaker)"
        )
        lines.append(f"rule      local.peer_check: {resolution.peer_check} ({rule})")
    networks = policy.trusted_proxies.networks
    shown = [str(n) for n in networks[:8]]
    if len(networks) > 8:
        shown.append(f"... {len(networks) - 8} more")
    if policy.trusted_proxies.allow_unix:
        shown.append("unix")
    lines.append(f"trusted   proxy.trusted_proxies: {', '.join(shown) or 'none'}")
    lines.append(
        f"headers   proxy.client_ip_headers: {', '.join(policy.client_ip_headers) or 'none'}"
    )
    if resolution.header_used:
        lines.append(f"using     {resolution.header_used}, walked right to left")
    lines.append("walk")
    for number, hop in enumerate(resolution.hops, start=1):
        lines.append(f"  {number:>2}. {hop.address:<40} [{hop.source}] {hop.verdict}: {hop.detail}")
    if resolution.anomalies:
        lines.append("anomalies")
        for anomaly in resolution.anomalies:
            lines.append(f"  - {anomaly}: {ANOMALY_HELP.get(anomaly, '')}")
    client = resolution.client_ip or "(none: unix socket)"
    cport = f" port {resolution.client_port}" if resolution.client_port is not None else ""
    lines.append(f"client    {client}{cport}")
    lines.append(f"scheme    {resolution.scheme}")
    lines.append(f"host      {resolution.host or '(none)'}")
    verdict = "LOCAL" if resolution.local else "REMOTE"
    after = (
        "no pairing needed"
        if resolution.local
        else "must pair: gateway token, approval, device token"
    )
    lines.append(f"decision  {verdict} ({after})")
    lines.append(f"because   {resolution.local_rule}")
    return "\n".join(lines)

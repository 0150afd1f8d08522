"""Client resolution, case by case: what Edge decides for each request shape.

Each id names the behaviour it pins. Where a case comes from another
implementation, the id or a comment says which, translated into this
contract; where this contract departs from it, the comment says so.
Sources:

- uvicorn ``ProxyHeadersMiddleware`` (0.54): trusts X-Forwarded-For only from
  ``trusted_hosts``, walks it right to left, takes the leftmost entry when all
  are trusted (uvicorn #1068), takes the last X-Forwarded-Proto line as a whole.
- Werkzeug ``ProxyFix(x_for=n)``: takes the n-th value from the right.
- nginx ``ngx_http_realip_module`` with ``real_ip_recursive on``: the last
  address not in ``set_real_ip_from``; at an unparsable entry it keeps the last
  trusted address it reached (the peer if the rightmost entry is bad); several
  header lines are read from the last one back.
- Caddy ``trusted_proxies`` with ``trusted_proxies_strict`` (right to left);
  its default reads left to right, which lets a client choose its address.
- Traefik ``ipStrategy.excludedIPs``: right to left, skipping excluded proxies.
- Home Assistant ``http/forwarded.py``: untrusted peer with X-Forwarded-For is
  logged as "Received X-Forwarded-For header from an untrusted proxy", lines
  are split and joined, all-trusted means the leftmost, X-Forwarded-Host takes
  the last value. It answers a bad entry with HTTP 400; here the walk stops
  and ``malformed_forwarded`` is recorded instead.
- RFC 7239 section 4 and 7 examples for Forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from edge.net import NetworkSet, PeerOwner, ResolverPolicy, resolve

MALFORMED = ("malformed_forwarded",)
UNTRUSTED = ("untrusted_proxy_headers",)
TOO_MANY = ("too_many_hops",)
NONE: tuple[str, ...] = ()

PROXY = ("10.0.0.2", 44321)
PROXIES = ("10.0.0.0/8",)
REMOTE = ("203.0.113.7", 50123)
LOOPBACK = ("127.0.0.1", 50000)
LAN = ("192.168.1.20", 51000)
UNCHECKED: Any = object()
# The table's loopback clients are the person at the keyboard: their connection belongs to
# the gateway's own user (tests/unit/test_peer_owner.py covers other owners and none).
OWN_USER = PeerOwner(1000, "alice", 1000, "alice", "sock_diag")


@dataclass(frozen=True)
class Case:
    peer: tuple[str, int] | None
    headers: tuple[tuple[str, str], ...]
    client: str | None
    local: bool
    anomalies: tuple[str, ...]
    trusted: tuple[str, ...] = ()
    client_ip_headers: tuple[str, ...] = ("x-forwarded-for",)
    local_networks: tuple[str, ...] = ()
    local_hosts: tuple[str, ...] = ()
    loopback: bool = True
    scheme_in: str = "http"
    websocket: bool = False
    port: Any = UNCHECKED
    scheme: Any = UNCHECKED
    host: Any = UNCHECKED
    header_used: Any = UNCHECKED
    trusted_peer: Any = UNCHECKED
    outcome: Any = UNCHECKED
    hops: Any = UNCHECKED


def case(case_id: str, peer: tuple[str, int] | None, headers: Any = (), **kw: Any) -> Any:
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    return pytest.param(Case(peer=peer, headers=tuple(headers), **kw), id=case_id)


def chain(count: int, first: int = 1) -> str:
    """``count`` distinct trusted proxy addresses (10.1.x.y), comma-separated."""
    return ", ".join(f"10.1.{(i // 250) % 250}.{i % 250 + 1}" for i in range(first, first + count))


# A table reads best one case to a few lines; the formatter would give each argument a line.
# fmt: off
CASES = [
    # --- untrusted peers: headers are ignored, and their presence is the signal
    case("untrusted_peer_without_headers_is_the_client", REMOTE, client="203.0.113.7",
         local=False, anomalies=NONE, port=50123, outcome="none", trusted_peer=False),
    case("untrusted_peer_x_forwarded_for_is_ignored_and_flagged_like_home_assistant", REMOTE,
         {"x-forwarded-for": "198.51.100.9"}, client="203.0.113.7", local=False,
         anomalies=UNTRUSTED, trusted=PROXIES, outcome="untrusted_proxy_headers"),
    case("untrusted_peer_forwarded_is_ignored", REMOTE, {"forwarded": "for=198.51.100.9"},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("untrusted_peer_x_real_ip_is_ignored", REMOTE, {"x-real-ip": "198.51.100.9"},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED, trusted=PROXIES,
         client_ip_headers=("x-real-ip",)),
    case("untrusted_peer_cannot_upgrade_the_scheme", REMOTE, {"x-forwarded-proto": "https"},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED, scheme="http"),
    case("untrusted_peer_cannot_change_the_host", REMOTE,
         {"host": "edge.example.com", "x-forwarded-host": "evil.example"},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED, host="edge.example.com"),
    case("untrusted_peer_x_forwarded_port_alone_is_flagged", REMOTE, {"x-forwarded-port": "443"},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED),
    case("untrusted_peer_empty_proxy_header_is_still_flagged", REMOTE, {"x-forwarded-for": ""},
         client="203.0.113.7", local=False, anomalies=UNTRUSTED),
    case("proxy_header_names_are_matched_case_insensitively", REMOTE,
         {"X-Forwarded-For": "198.51.100.9"}, client="203.0.113.7", local=False,
         anomalies=UNTRUSTED),
    case("uvicorn_untrusted_default_when_nothing_is_configured", ("10.0.0.2", 1),
         {"x-forwarded-for": "198.51.100.9"}, client="10.0.0.2", local=False,
         anomalies=UNTRUSTED),
    # --- the trusted walk over X-Forwarded-For
    case("trusted_peer_single_entry_is_the_client_nginx_proxy_add_x_forwarded_for", PROXY,
         {"x-forwarded-for": "203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES, port=None, header_used="x-forwarded-for",
         trusted_peer=True, outcome="trusted"),
    case("trusted_peer_without_client_header_is_itself_the_client", PROXY, client="10.0.0.2",
         local=False, anomalies=NONE, trusted=PROXIES, port=44321, header_used=None,
         outcome="none"),
    case("spoofed_leftmost_entry_is_ignored", PROXY,
         {"x-forwarded-for": "1.2.3.4, 203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES),
    case("chain_of_trusted_proxies_is_skipped_nginx_real_ip_recursive", PROXY,
         {"x-forwarded-for": "203.0.113.7, 10.0.0.3, 10.0.0.4"}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES,
         hops=["trusted proxy", "trusted proxy", "trusted proxy", "client"]),
    case("first_untrusted_entry_from_the_right_wins_traefik_excluded_ips", PROXY,
         {"x-forwarded-for": "198.51.100.1, 198.51.100.2, 203.0.113.7, 10.0.0.3"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("all_entries_trusted_client_is_leftmost_uvicorn_1068_home_assistant", PROXY,
         {"x-forwarded-for": "10.0.0.9, 10.0.0.3"}, client="10.0.0.9", local=False,
         anomalies=NONE, trusted=PROXIES),
    case("werkzeug_proxyfix_x_for_1_rightmost_value", PROXY,
         {"x-forwarded-for": "6.6.6.6, 203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=("10.0.0.2",)),
    case("werkzeug_proxyfix_x_for_2_second_value_from_the_right", PROXY,
         {"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.0.0.3"}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=("10.0.0.2", "10.0.0.3")),
    # Caddy's default reads left to right and would answer 6.6.6.6 here.
    case("caddy_strict_mode_right_to_left_not_caddy_default_leftmost", PROXY,
         {"x-forwarded-for": "6.6.6.6, 203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES),
    # uvicorn would make the string "unknown" the client; here the walk stops at the peer.
    case("unknown_entry_is_malformed_not_a_client_unlike_uvicorn", PROXY,
         {"x-forwarded-for": "unknown"}, client="10.0.0.2", local=False, anomalies=MALFORMED,
         trusted=PROXIES, outcome="malformed_forwarded"),
    case("multiple_x_forwarded_for_lines_are_joined_in_order", PROXY,
         [("x-forwarded-for", "203.0.113.7"), ("x-forwarded-for", "10.0.0.3")],
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("spoof_in_an_earlier_line_is_ignored_nginx_reads_lines_from_the_last", PROXY,
         [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.7")],
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("empty_elements_are_dropped", PROXY, {"x-forwarded-for": ",203.0.113.7,, ,10.0.0.3,"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("whitespace_around_entries_is_stripped", PROXY,
         {"x-forwarded-for": "  203.0.113.7 \t,\t10.0.0.3  "}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES),
    case("empty_header_from_trusted_peer_leaves_the_peer_as_client", PROXY,
         {"x-forwarded-for": " , "}, client="10.0.0.2", local=False, anomalies=NONE,
         trusted=PROXIES, header_used="x-forwarded-for"),
    case("ipv4_entry_with_port_gives_the_port_nginx_1_11", PROXY,
         {"x-forwarded-for": "203.0.113.7:4711"}, client="203.0.113.7", port=4711,
         local=False, anomalies=NONE, trusted=PROXIES),
    case("bare_ipv6_entry", PROXY, {"x-forwarded-for": "2001:db8::7"}, client="2001:db8::7",
         port=None, local=False, anomalies=NONE, trusted=PROXIES),
    case("bracketed_ipv6_entry_with_port", PROXY, {"x-forwarded-for": "[2001:db8::7]:4711"},
         client="2001:db8::7", port=4711, local=False, anomalies=NONE, trusted=PROXIES),
    case("bracketed_ipv6_entry_without_port", PROXY, {"x-forwarded-for": "[2001:db8::7]"},
         client="2001:db8::7", port=None, local=False, anomalies=NONE, trusted=PROXIES),
    case("ipv6_entry_is_canonicalised", PROXY, {"x-forwarded-for": "2001:DB8:0:0:0::7"},
         client="2001:db8::7", local=False, anomalies=NONE, trusted=PROXIES),
    case("bare_ipv6_never_carries_a_port", PROXY, {"x-forwarded-for": "2001:db8::7:4711"},
         client="2001:db8::7:4711", port=None, local=False, anomalies=NONE, trusted=PROXIES),
    case("ipv4_mapped_entry_is_ipv4", PROXY, {"x-forwarded-for": "::ffff:203.0.113.7"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("ipv4_mapped_proxy_entry_is_trusted_as_ipv4", PROXY,
         {"x-forwarded-for": "203.0.113.7, ::ffff:10.0.0.3"}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES),
    case("bracketed_ipv4_mapped_entry_with_port", PROXY,
         {"x-forwarded-for": "[::ffff:203.0.113.7]:80"}, client="203.0.113.7", port=80,
         local=False, anomalies=NONE, trusted=PROXIES),
    case("ipv4_mapped_peer_is_trusted_as_ipv4", ("::ffff:10.0.0.2", 1),
         {"x-forwarded-for": "203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES, trusted_peer=True),
    case("ipv4_mapped_trusted_network_matches_ipv4_peer", PROXY,
         {"x-forwarded-for": "203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=("::ffff:10.0.0.0/104",)),
    case("trusted_ipv6_peer", ("2001:db8:1::2", 1), {"x-forwarded-for": "203.0.113.7"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=("2001:db8:1::/64",)),
    case("ipv6_peer_outside_the_trusted_network_is_untrusted", ("2001:db8:2::2", 1),
         {"x-forwarded-for": "203.0.113.7"}, client="2001:db8:2::2", local=False,
         anomalies=UNTRUSTED, trusted=("2001:db8:1::/64",)),
    # --- malformed entries stop the walk at the last trusted address (nginx realip)
    case("garbage_rightmost_entry_keeps_the_peer_nginx_declined", PROXY,
         {"x-forwarded-for": "203.0.113.7, garbage"}, client="10.0.0.2", local=False,
         anomalies=MALFORMED, trusted=PROXIES, hops=["trusted proxy", "malformed"]),
    case("garbage_after_trusted_hop_keeps_the_last_trusted_nginx_done", PROXY,
         {"x-forwarded-for": "garbage, 10.0.0.3"}, client="10.0.0.3", local=False,
         anomalies=MALFORMED, trusted=PROXIES),
    case("garbage_left_of_the_client_is_never_reached", PROXY,
         {"x-forwarded-for": "garbage, 203.0.113.7"}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES),
    case("leading_zero_ipv4_entry_is_malformed", PROXY, {"x-forwarded-for": "010.0.0.1"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("quoted_entry_in_x_forwarded_for_is_malformed", PROXY,
         {"x-forwarded-for": '"203.0.113.7"'}, client="10.0.0.2", local=False,
         anomalies=MALFORMED, trusted=PROXIES),
    case("port_above_65535_is_malformed", PROXY, {"x-forwarded-for": "203.0.113.7:65536"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("empty_port_is_malformed", PROXY, {"x-forwarded-for": "203.0.113.7:"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("named_port_is_malformed", PROXY, {"x-forwarded-for": "203.0.113.7:http"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("bracketed_ipv4_is_malformed", PROXY, {"x-forwarded-for": "[203.0.113.7]:80"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("ipv6_zone_id_in_a_header_is_malformed", PROXY, {"x-forwarded-for": "fe80::1%eth0"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("host_name_entry_is_malformed", PROXY, {"x-forwarded-for": "client.example.com"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("obfuscated_identifier_in_x_forwarded_for_is_malformed", PROXY,
         {"x-forwarded-for": "_hidden"}, client="10.0.0.2", local=False, anomalies=MALFORMED,
         trusted=PROXIES),
    case("entry_with_inner_space_is_malformed", PROXY, {"x-forwarded-for": "203.0.113. 7"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("five_octets_is_malformed", PROXY, {"x-forwarded-for": "1.2.3.4.5"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("non_ascii_digits_are_malformed", PROXY,
         {"x-forwarded-for": "\uff12\uff10\uff13.0.113.7".encode().decode("latin-1")},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    case("short_ipv4_form_is_malformed", PROXY, {"x-forwarded-for": "127.1"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES),
    # --- the 64-hop limit
    case("exactly_64_trusted_entries_are_walked_without_anomaly", PROXY,
         {"x-forwarded-for": chain(64)}, client="10.1.0.2", local=False, anomalies=NONE,
         trusted=PROXIES),
    case("sixty_five_trusted_entries_are_too_many_hops", PROXY,
         {"x-forwarded-for": chain(65)}, client="10.1.0.3", local=False, anomalies=TOO_MANY,
         trusted=PROXIES, outcome="too_many_hops"),
    case("too_many_hops_counts_entries_across_lines", PROXY,
         [("x-forwarded-for", chain(40)), ("x-forwarded-for", chain(40, first=41))],
         client="10.1.0.18", local=False, anomalies=TOO_MANY, trusted=PROXIES),
    case("stuffed_header_resolves_when_the_client_is_within_64", PROXY,
         {"x-forwarded-for": ", ".join(["6.6.6.6"] * 1000 + ["203.0.113.7", chain(3)])},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES),
    case("too_many_hops_in_forwarded", PROXY,
         {"forwarded": ", ".join(f"for={a}" for a in chain(65).split(", "))},
         client="10.1.0.3", local=False, anomalies=TOO_MANY, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    # --- RFC 7239 Forwarded
    case("rfc7239_obfuscated_gazonk_is_malformed", PROXY, {"forwarded": 'for="_gazonk"'},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_quoted_ipv6_with_port_and_capitalised_parameter", PROXY,
         {"forwarded": 'For="[2001:db8:cafe::17]:4711"'}, client="2001:db8:cafe::17",
         port=4711, local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",), header_used="forwarded"),
    case("rfc7239_for_proto_by", PROXY, {"forwarded": "for=192.0.2.60;proto=https;by=203.0.113.43"},
         client="192.0.2.60", scheme="https", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_several_elements", PROXY, {"forwarded": "for=192.0.2.43, for=198.51.100.17"},
         client="192.0.2.43", local=False, anomalies=NONE,
         trusted=("10.0.0.0/8", "198.51.100.0/24"), client_ip_headers=("forwarded",)),
    case("rfc7239_unknown_is_malformed", PROXY, {"forwarded": "for=unknown"}, client="10.0.0.2",
         local=False, anomalies=MALFORMED, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_obfuscated_after_trusted_keeps_last_trusted", PROXY,
         {"forwarded": "for=_hidden, for=10.0.0.3"}, client="10.0.0.3", local=False,
         anomalies=MALFORMED, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_several_header_lines", PROXY,
         [("forwarded", "for=203.0.113.7"), ("forwarded", "for=10.0.0.3")],
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_proto_and_host_come_from_the_client_element", PROXY,
         {"forwarded": 'for=203.0.113.7;proto=https;host="edge.example.com", for=10.0.0.3;proto=http;host=internal'},
         client="203.0.113.7", scheme="https", host="edge.example.com", local=False,
         anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_element_proto_wins_over_x_forwarded_proto", PROXY,
         {"forwarded": "for=203.0.113.7;proto=https", "x-forwarded-proto": "http"},
         client="203.0.113.7", scheme="https", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_unquoted_ipv6_is_malformed", PROXY, {"forwarded": "for=[2001:db8::7]"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_unquoted_port_is_malformed", PROXY, {"forwarded": "for=203.0.113.7:4711"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_quoted_ipv4_with_port", PROXY, {"forwarded": 'for="203.0.113.7:4711"'},
         client="203.0.113.7", port=4711, local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_comma_inside_quotes_stays_in_one_element", PROXY,
         {"forwarded": 'for=203.0.113.7;ext="a, for=6.6.6.6"'}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_escaped_quote_inside_quotes", PROXY,
         {"forwarded": 'for=203.0.113.7;ext="say \\"hi\\", ok"'}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_empty_pairs_are_allowed", PROXY, {"forwarded": ";for=203.0.113.7;;proto=https;"},
         client="203.0.113.7", scheme="https", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_repeated_parameter_is_malformed", PROXY,
         {"forwarded": "for=203.0.113.7;for=6.6.6.6"}, client="10.0.0.2", local=False,
         anomalies=MALFORMED, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_element_without_for_is_malformed", PROXY,
         {"forwarded": "proto=https;by=10.0.0.2"}, client="10.0.0.2", local=False,
         anomalies=MALFORMED, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_unbalanced_quote_left_of_the_proxy_element_is_contained", PROXY,
         {"forwarded": 'for="6.6.6.6, for=203.0.113.7'}, client="203.0.113.7", local=False,
         anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_unbalanced_quote_in_the_proxy_element_is_malformed", PROXY,
         {"forwarded": 'for=203.0.113.7, for="10.0.0.3'}, client="10.0.0.2", local=False,
         anomalies=MALFORMED, trusted=PROXIES, client_ip_headers=("forwarded",)),
    case("rfc7239_garbage_element_is_malformed", PROXY, {"forwarded": "garbage"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_empty_elements_are_dropped", PROXY, {"forwarded": ", for=203.0.113.7 ,, "},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded",)),
    case("rfc7239_unsupported_proto_keeps_the_scope_scheme", PROXY,
         {"forwarded": "for=203.0.113.7;proto=gopher"}, client="203.0.113.7", scheme="http",
         local=False, anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded",)),
    # --- which header is used
    case("first_configured_header_present_is_used", PROXY,
         {"forwarded": "for=198.51.100.1", "x-forwarded-for": "198.51.100.2"},
         client="198.51.100.1", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("forwarded", "x-forwarded-for"), header_used="forwarded"),
    case("next_configured_header_when_the_first_is_absent", PROXY,
         {"x-forwarded-for": "198.51.100.2"}, client="198.51.100.2", local=False,
         anomalies=NONE, trusted=PROXIES, client_ip_headers=("forwarded", "x-forwarded-for"),
         header_used="x-forwarded-for"),
    case("header_not_configured_is_not_used", PROXY, {"forwarded": "for=198.51.100.1"},
         client="10.0.0.2", local=False, anomalies=NONE, trusted=PROXIES, header_used=None,
         outcome="trusted"),
    case("x_real_ip_single_address_nginx_default_header", PROXY, {"x-real-ip": "203.0.113.7"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("x-real-ip",), header_used="x-real-ip"),
    case("x_real_ip_with_port", PROXY, {"x-real-ip": "203.0.113.7:8080"}, client="203.0.113.7",
         port=8080, local=False, anomalies=NONE, trusted=PROXIES, client_ip_headers=("x-real-ip",)),
    case("x_real_ip_list_is_malformed", PROXY, {"x-real-ip": "203.0.113.7, 10.0.0.3"},
         client="10.0.0.2", local=False, anomalies=MALFORMED, trusted=PROXIES,
         client_ip_headers=("x-real-ip",)),
    case("x_real_ip_uses_only_the_first_line", PROXY,
         [("x-real-ip", "203.0.113.7"), ("x-real-ip", "198.51.100.9")], client="203.0.113.7",
         local=False, anomalies=NONE, trusted=PROXIES, client_ip_headers=("x-real-ip",)),
    case("x_real_ip_naming_a_trusted_proxy_is_the_client", PROXY, {"x-real-ip": "10.0.0.9"},
         client="10.0.0.9", local=False, anomalies=NONE, trusted=PROXIES,
         client_ip_headers=("x-real-ip",)),
    # --- scheme and host
    case("x_forwarded_proto_https_sets_the_scheme_uvicorn", PROXY,
         {"x-forwarded-proto": "https"}, client="10.0.0.2", scheme="https", local=False,
         anomalies=NONE, trusted=PROXIES, outcome="trusted"),
    case("x_forwarded_proto_rightmost_value_wins", PROXY, {"x-forwarded-proto": "http, https"},
         client="10.0.0.2", scheme="https", local=False, anomalies=NONE, trusted=PROXIES),
    case("x_forwarded_proto_rightmost_over_lines", PROXY,
         [("x-forwarded-proto", "https"), ("x-forwarded-proto", "http")], client="10.0.0.2",
         scheme="http", local=False, anomalies=NONE, trusted=PROXIES),
    case("x_forwarded_proto_is_case_insensitive", PROXY, {"x-forwarded-proto": "HTTPS"},
         client="10.0.0.2", scheme="https", local=False, anomalies=NONE, trusted=PROXIES),
    case("x_forwarded_proto_unknown_value_is_ignored", PROXY, {"x-forwarded-proto": "gopher"},
         client="10.0.0.2", scheme="http", local=False, anomalies=NONE, trusted=PROXIES),
    case("x_forwarded_proto_empty_is_ignored", PROXY, {"x-forwarded-proto": " "},
         client="10.0.0.2", scheme="https", scheme_in="https", local=False, anomalies=NONE,
         trusted=PROXIES),
    case("websocket_scope_maps_https_to_wss_uvicorn", PROXY, {"x-forwarded-proto": "https"},
         client="10.0.0.2", scheme="wss", websocket=True, scheme_in="ws", local=False,
         anomalies=NONE, trusted=PROXIES),
    case("websocket_scope_maps_http_to_ws", PROXY, {"x-forwarded-proto": "http"},
         client="10.0.0.2", scheme="ws", websocket=True, scheme_in="wss", local=False,
         anomalies=NONE, trusted=PROXIES),
    case("http_scope_maps_wss_to_https", PROXY, {"x-forwarded-proto": "wss"},
         client="10.0.0.2", scheme="https", local=False, anomalies=NONE, trusted=PROXIES),
    case("websocket_scope_keeps_its_own_scheme_without_headers", REMOTE, client="203.0.113.7",
         scheme="wss", websocket=True, scheme_in="wss", local=False, anomalies=NONE),
    case("unknown_scope_scheme_becomes_http", REMOTE, client="203.0.113.7", scheme="http",
         scheme_in="gopher", local=False, anomalies=NONE),
    case("x_forwarded_host_sets_the_host", PROXY,
         {"host": "internal:8080", "x-forwarded-host": "Edge.Example.com"}, client="10.0.0.2",
         host="edge.example.com", local=False, anomalies=NONE, trusted=PROXIES),
    case("x_forwarded_host_rightmost_value_wins_home_assistant", PROXY,
         {"host": "internal", "x-forwarded-host": "evil.example, edge.example.com:8443"},
         client="10.0.0.2", host="edge.example.com:8443", local=False, anomalies=NONE,
         trusted=PROXIES),
    case("invalid_x_forwarded_host_falls_back_to_host", PROXY,
         {"host": "edge.example.com", "x-forwarded-host": "bad host!"}, client="10.0.0.2",
         host="edge.example.com", local=False, anomalies=NONE, trusted=PROXIES),
    # --- locality: direct loopback
    case("direct_loopback_without_host_is_local", LOOPBACK, client="127.0.0.1", local=True,
         anomalies=NONE, port=50000),
    case("direct_loopback_with_localhost_host_is_local", LOOPBACK, {"host": "localhost:18789"},
         client="127.0.0.1", local=True, anomalies=NONE),
    case("any_127_8_address_is_loopback", ("127.5.6.7", 1), {"host": "localhost"},
         client="127.5.6.7", local=True, anomalies=NONE),
    case("ipv6_loopback_is_local", ("::1", 1), {"host": "[::1]:18789"}, client="::1",
         local=True, anomalies=NONE),
    case("ipv4_mapped_loopback_peer_is_local", ("::ffff:127.0.0.1", 1), {"host": "localhost"},
         client="127.0.0.1", local=True, anomalies=NONE),
    case("dot_localhost_subdomain_host_is_local", LOOPBACK, {"host": "app.localhost"},
         client="127.0.0.1", local=True, anomalies=NONE),
    case("loopback_literal_host_is_local", LOOPBACK, {"host": "127.0.0.1:18789"},
         client="127.0.0.1", local=True, anomalies=NONE),
    case("configured_local_host_is_local_for_loopback", LOOPBACK, {"host": "mybox.lan"},
         client="127.0.0.1", local=True, anomalies=NONE, local_hosts=("MyBox.lan.",)),
    case("host_with_trailing_dot_and_capitals_is_normalised", LOOPBACK, {"host": "LOCALHOST."},
         client="127.0.0.1", local=True, anomalies=NONE),
    case("foreign_host_denies_loopback_dns_rebinding", LOOPBACK, {"host": "evil.example"},
         client="127.0.0.1", local=False, anomalies=NONE),
    case("localhost_prefix_of_a_foreign_domain_denies", LOOPBACK,
         {"host": "localhost.evil.example"}, client="127.0.0.1", local=False, anomalies=NONE),
    case("name_merely_ending_in_localhost_denies", LOOPBACK, {"host": "evillocalhost"},
         client="127.0.0.1", local=False, anomalies=NONE),
    case("lan_ip_host_denies_direct_loopback", LOOPBACK, {"host": "192.168.1.5"},
         client="127.0.0.1", local=False, anomalies=NONE),
    case("invalid_host_denies_loopback", LOOPBACK, {"host": "bad host"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("loopback_origin_agrees", LOOPBACK,
         {"host": "localhost:18789", "origin": "http://localhost:18789"}, client="127.0.0.1",
         local=True, anomalies=NONE),
    # Exact origins (DESIGN "Authority"): a page on another loopback port or another
    # local name is another site, and a request it makes is never local.
    case("loopback_literal_origin_on_another_port_denies", LOOPBACK,
         {"host": "localhost:18789", "origin": "http://127.0.0.1:5173"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("localhost_origin_on_another_port_denies", LOOPBACK,
         {"host": "localhost:18789", "origin": "http://localhost:3000"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("origin_with_another_scheme_denies", LOOPBACK,
         {"host": "localhost:18789", "origin": "https://localhost:18789"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("default_port_origin_matches_a_host_without_port", LOOPBACK,
         {"host": "localhost", "origin": "http://localhost:80"}, client="127.0.0.1",
         local=True, anomalies=NONE),
    case("configured_local_host_origin_for_another_host_denies", LOOPBACK,
         {"host": "localhost", "origin": "https://mybox.lan"}, client="127.0.0.1", local=False,
         anomalies=NONE, local_hosts=("mybox.lan",)),
    case("foreign_origin_denies_loopback_cross_site", LOOPBACK,
         {"host": "localhost:18789", "origin": "https://evil.example"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("null_origin_denies", LOOPBACK, {"host": "localhost", "origin": "null"},
         client="127.0.0.1", local=False, anomalies=NONE),
    case("unparsable_origin_denies", LOOPBACK, {"host": "localhost", "origin": "not a url"},
         client="127.0.0.1", local=False, anomalies=NONE),
    case("origin_with_a_path_is_not_an_origin", LOOPBACK,
         {"host": "localhost", "origin": "http://localhost/page"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("origin_with_user_info_is_not_an_origin", LOOPBACK,
         {"host": "localhost", "origin": "http://evil.example@localhost"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("non_http_origin_denies", LOOPBACK,
         {"host": "localhost", "origin": "chrome-extension://abcdef"}, client="127.0.0.1",
         local=False, anomalies=NONE),
    case("two_host_headers_deny", LOOPBACK, [("host", "localhost"), ("host", "evil.example")],
         client="127.0.0.1", local=False, anomalies=NONE),
    case("two_origin_headers_deny", LOOPBACK,
         [("host", "localhost"), ("origin", "http://localhost"), ("origin", "https://evil.example")],
         client="127.0.0.1", local=False, anomalies=NONE),
    case("local_loopback_off_denies", LOOPBACK, {"host": "localhost"}, client="127.0.0.1",
         local=False, anomalies=NONE, loopback=False),
    # the OpenClaw incident: nginx on the same host, trusted_proxies left empty
    case("same_host_proxy_not_in_trusted_proxies_is_never_local", LOOPBACK,
         {"host": "localhost", "x-forwarded-for": "203.0.113.7"}, client="127.0.0.1",
         local=False, anomalies=UNTRUSTED),
    case("proxy_headers_from_a_trusted_loopback_proxy_deny_locality", LOOPBACK,
         {"host": "localhost", "x-forwarded-for": "203.0.113.7"}, client="203.0.113.7",
         local=False, anomalies=NONE, trusted=("127.0.0.1",)),
    case("x_forwarded_proto_alone_from_a_trusted_loopback_proxy_denies", LOOPBACK,
         {"host": "localhost", "x-forwarded-proto": "https"}, client="127.0.0.1", local=False,
         anomalies=NONE, trusted=("127.0.0.1",)),
    case("loopback_client_named_by_a_trusted_loopback_proxy_is_not_local", LOOPBACK,
         {"host": "localhost", "x-forwarded-for": "127.0.0.1"}, client="127.0.0.1",
         local=False, anomalies=NONE, trusted=("127.0.0.0/8",)),
    case("empty_proxy_header_from_a_trusted_loopback_proxy_denies", LOOPBACK,
         {"host": "localhost", "x-forwarded-for": ""}, client="127.0.0.1", local=False,
         anomalies=NONE, trusted=("127.0.0.1",)),
    # The contract keeps a trusted loopback peer that sent no proxy header at all
    # direct-local (a CLI on the proxy's host); see docs on proxies that can be
    # made to drop their own headers (Traefik CVE-2024-45410).
    case("trusted_loopback_peer_without_any_proxy_header_is_direct_local", LOOPBACK,
         {"host": "localhost"}, client="127.0.0.1", local=True, anomalies=NONE,
         trusted=("127.0.0.1",)),
    # --- locality: local networks
    case("lan_client_with_ip_literal_host_is_local", LAN, {"host": "192.168.1.5:18789"},
         client="192.168.1.20", local=True, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_domain_host_is_denied_dns_rebinding", LAN, {"host": "evil.example"},
         client="192.168.1.20", local=False, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_configured_host_name_is_local", LAN, {"host": "edge.lan:18789"},
         client="192.168.1.20", local=True, anomalies=NONE, local_networks=("192.168.1.0/24",),
         local_hosts=("edge.lan",)),
    case("lan_client_with_dot_localhost_host_is_local", LAN, {"host": "edge.localhost"},
         client="192.168.1.20", local=True, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_without_host_is_denied", LAN, client="192.168.1.20", local=False,
         anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_same_origin_is_local", LAN,
         {"host": "192.168.1.5:18789", "origin": "http://192.168.1.5:18789"},
         client="192.168.1.20", local=True, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_another_ip_literal_origin_is_denied", LAN,
         {"host": "192.168.1.5:18789", "origin": "http://203.0.113.66"},
         client="192.168.1.20", local=False, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_loopback_origin_is_denied", LAN,
         {"host": "192.168.1.5", "origin": "http://localhost:5173"}, client="192.168.1.20",
         local=False, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_null_origin_is_denied", LAN, {"host": "192.168.1.5", "origin": "null"},
         client="192.168.1.20", local=False, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("lan_client_behind_a_trusted_proxy_is_local", PROXY,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.20"}, client="192.168.1.20",
         local=True, anomalies=NONE, trusted=PROXIES, local_networks=("192.168.1.0/24",)),
    case("lan_client_behind_trusted_loopback_proxy_uses_the_network_rule", LOOPBACK,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.20"}, client="192.168.1.20",
         local=True, anomalies=NONE, trusted=("127.0.0.1",), local_networks=("192.168.1.0/24",)),
    case("lan_client_with_forwarded_domain_host_is_denied", PROXY,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.20",
          "x-forwarded-host": "edge.example.com"},
         client="192.168.1.20", local=False, anomalies=NONE, trusted=PROXIES,
         local_networks=("192.168.1.0/24",)),
    case("lan_peer_sending_untrusted_headers_is_denied", LAN,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.30"}, client="192.168.1.20",
         local=False, anomalies=UNTRUSTED, local_networks=("192.168.1.0/24",)),
    case("lan_client_with_malformed_chain_is_denied", PROXY,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.20, junk"}, client="10.0.0.2",
         local=False, anomalies=MALFORMED, trusted=PROXIES, local_networks=("10.0.0.0/8",)),
    case("client_outside_local_networks_is_remote", REMOTE, {"host": "192.168.1.5"},
         client="203.0.113.7", local=False, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("ipv4_mapped_lan_client_is_local", ("::ffff:192.168.1.20", 1), {"host": "192.168.1.5"},
         client="192.168.1.20", local=True, anomalies=NONE, local_networks=("192.168.1.0/24",)),
    case("ipv6_lan_client_is_local", ("fd00::20", 1), {"host": "[fd00::5]:18789"},
         client="fd00::20", local=True, anomalies=NONE, local_networks=("fd00::/64",)),
    # --- unix sockets and peers that are not addresses
    case("trusted_unix_socket_peer_uses_the_header", None, {"x-forwarded-for": "203.0.113.7"},
         client="203.0.113.7", local=False, anomalies=NONE, trusted=("unix",),
         trusted_peer=True),
    case("untrusted_unix_socket_peer_with_headers_is_flagged", None,
         {"x-forwarded-for": "203.0.113.7"}, client=None, local=False, anomalies=UNTRUSTED,
         trusted=PROXIES, trusted_peer=False),
    case("unix_socket_peer_is_never_direct_loopback_local", None, {"host": "localhost"},
         client=None, local=False, anomalies=NONE, trusted=("unix",)),
    case("trusted_unix_socket_client_in_local_networks_is_local", None,
         {"host": "192.168.1.5", "x-forwarded-for": "192.168.1.20"}, client="192.168.1.20",
         local=True, anomalies=NONE, trusted=("unix",), local_networks=("192.168.1.0/24",)),
    case("testclient_peer_is_untrusted_non_local_and_stays_the_client", ("testclient", 50000),
         {"host": "localhost"}, client="testclient", local=False, anomalies=NONE,
         trusted=PROXIES, trusted_peer=False, port=50000),
    case("testclient_peer_with_proxy_headers_is_flagged", ("testclient", 50000),
         {"x-forwarded-for": "203.0.113.7"}, client="testclient", local=False,
         anomalies=UNTRUSTED, trusted=("0.0.0.0/1", "128.0.0.0/1")),
    case("link_local_peer_zone_id_from_the_socket_is_dropped", ("fe80::1%eth0", 1),
         {"host": "[fe80::5]"}, client="fe80::1", local=True, anomalies=NONE,
         local_networks=("fe80::/10",)),
    case("unspecified_address_peer_is_not_loopback", ("0.0.0.0", 1), {"host": "localhost"},
         client="0.0.0.0", local=False, anomalies=NONE),
]
# fmt: on


def policy_for(c: Case) -> ResolverPolicy:
    return ResolverPolicy(
        trusted_proxies=NetworkSet.parse(list(c.trusted)),
        client_ip_headers=c.client_ip_headers,
        local_loopback=c.loopback,
        local_networks=NetworkSet.parse(list(c.local_networks), allow_unix_word=False),
        local_hosts=frozenset(c.local_hosts),
    )


def test_the_table_is_large_enough_to_mean_something() -> None:
    assert len(CASES) >= 80
    assert len({p.id for p in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES)
def test_resolution(c: Case) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in c.headers]
    result = resolve(
        c.peer,
        headers,
        policy_for(c),
        scheme=c.scheme_in,
        websocket=c.websocket,
        peer_owner=OWN_USER,
    )

    assert result.client_ip == c.client, result.hops
    assert result.anomalies == c.anomalies, result.hops
    assert result.local is c.local, result.local_rule
    expected = {
        "client_port": c.port,
        "scheme": c.scheme,
        "host": c.host,
        "header_used": c.header_used,
        "trusted_peer": c.trusted_peer,
        "proxy_outcome": c.outcome,
    }
    for attribute, value in expected.items():
        if value is not UNCHECKED:
            assert getattr(result, attribute) == value, attribute
    if c.hops is not UNCHECKED:
        assert [hop.verdict for hop in result.hops] == c.hops
    # invariants every case must also keep
    assert result.scheme in (("ws", "wss") if c.websocket else ("http", "https"))
    if result.local:
        assert not result.anomalies
    assert result.hops[0].source == "peer"

"""Coverage-guided fuzz targets for atheris (libFuzzer), run by ``test_fuzz_atheris.py``.

Usage: python tests/security/atheris_targets.py TARGET [libFuzzer flags, e.g. -runs=20000]

Targets, each over bytes that libFuzzer mutates towards new code paths:

- ``resolution``: a peer, a policy and up to eight proxy, Host and Origin header
  lines of arbitrary bytes go through ``edge.net.resolve``. It must not raise,
  an untrusted peer must stay the client, and the client must be the peer or
  an address written in the header that was used.
- ``forwarded``: one arbitrary header line through the X-Forwarded-For and RFC
  7239 parsers: no exception, never more than the hop limit plus one entry.
- ``connect``: arbitrary text as the first frame of the control socket, through
  the JSON decoder, ``connect_attempt`` and ``verify_device``: the answer
  is a checked attempt or a malformed one, a verified identity or a ``Denial``.
- ``config``: arbitrary text as ``edge.yaml``: ``Settings`` or ``ConfigError``.

The first exception (or failed check) ends the run with libFuzzer's crash
report and a non-zero exit status, the input saved under ``-artifact_prefix``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

with atheris.instrument_imports(include=["edge"]):
    from edge.config import ConfigError, Settings, load_settings, parse_yaml
    from edge.gateway.protocol import connect_attempt
    from edge.net import NetworkSet, ResolverPolicy, parse_forwarded, resolve
    from edge.net import split_x_forwarded_for as split_xff
    from edge.net.resolve import PROXY_HEADERS
    from edge.pairing.identity import VerifiedIdentity, verify_device
    from edge.pairing.models import ConnectAttempt, MalformedConnect
    from edge.refusals import Denial

HOP_LIMIT = 64
NONCE = "n" * 43
NOW_MS = 1_780_000_000_000

POLICIES = (
    ResolverPolicy(),
    ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "127.0.0.1", "::1"])),
    ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "2001:db8::/32", "unix"]),
        client_ip_headers=("forwarded", "x-forwarded-for", "x-real-ip"),
        local_networks=NetworkSet.parse(["192.168.1.0/24"], allow_unix_word=False),
        local_hosts=frozenset({"edge.lan"}),
    ),
    ResolverPolicy(
        trusted_proxies=NetworkSet.parse(["10.0.0.0/8"]),
        client_ip_headers=("x-real-ip",),
        max_hops=3,
    ),
)
PEERS: tuple[tuple[str, int] | None, ...] = (
    ("127.0.0.1", 50000),
    ("::1", 50001),
    ("10.1.2.3", 50002),
    ("203.0.113.7", 50003),
    ("::ffff:10.0.0.9", 50004),
    ("2001:db8::5", 50005),
    ("192.168.1.20", 50006),
    None,
)
HEADER_NAMES = (*sorted(PROXY_HEADERS), b"host", b"origin")


def _pick(fdp: atheris.FuzzedDataProvider, options: tuple[object, ...]) -> object:
    return options[fdp.ConsumeIntInRange(0, len(options) - 1)]


def fuzz_resolution(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    policy = _pick(fdp, POLICIES)
    peer = _pick(fdp, PEERS)
    websocket = fdp.ConsumeBool()
    headers = [
        (_pick(fdp, HEADER_NAMES), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 256)))
        for _ in range(fdp.ConsumeIntInRange(0, 8))
    ]
    assert isinstance(policy, ResolverPolicy)
    assert peer is None or isinstance(peer, tuple)
    result = resolve(peer, headers, policy, websocket=websocket)  # type: ignore[arg-type]
    if not result.trusted_peer:
        assert result.client_ip == result.peer_ip, (peer, headers, result)
    if result.client_ip not in (None, result.peer_ip):
        assert result.header_used is not None, result
        written = b" ".join(v for n, v in headers if n.decode() == result.header_used)
        assert result.client_ip.encode() in written.lower() or ":" in result.client_ip, (
            headers,
            result,
        )
    assert result.local is False or not result.anomalies, result


def fuzz_forwarded(data: bytes) -> None:
    line = data.decode("latin-1")
    entries, more = split_xff([line], HOP_LIMIT)
    assert len(entries) <= HOP_LIMIT + 1 and isinstance(more, bool)
    elements, more = parse_forwarded([line], HOP_LIMIT)
    assert len(elements) <= HOP_LIMIT + 1 and isinstance(more, bool)


def fuzz_connect(data: bytes) -> None:
    try:
        frame = json.loads(data.decode("utf-8", errors="surrogatepass"))
    except (ValueError, RecursionError):
        return  # the socket answers these with `invalid handshake` before any parsing
    parsed = connect_attempt(frame)
    assert isinstance(parsed, ConnectAttempt | MalformedConnect)
    device = frame.get("device") if isinstance(frame, dict) else None
    role = frame.get("role") if isinstance(frame, dict) else None
    identity = verify_device(device, NONCE, role if isinstance(role, str) else "user", NOW_MS)
    assert isinstance(identity, VerifiedIdentity | Denial)


def fuzz_config(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        loaded = load_settings(parse_yaml(text, "edge.yaml"), environ={})
    except ConfigError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)
    else:
        assert isinstance(loaded, Settings)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "resolution": fuzz_resolution,
    "forwarded": fuzz_forwarded,
    "connect": fuzz_connect,
    "config": fuzz_config,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer flags]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""The causes behind refusals that the refusal's own words would hide.

A refusal row (``edge.refusals``) says what the gateway decided; a cause says
why, when the decision is only a symptom. The dashboard matches a cause on the
refusal's snake_case reason and an anomaly ``/api/whoami`` reports; the doctor
matches it on what the running gateway recorded (``edge.diagnostics``). It
imports nothing of Edge's, so ``edge.refusals`` can serve it in its table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Cause:
    """What is really wrong when a refusal comes with a tell-tale anomaly of the resolution.

    A refusal row says what the gateway decided; a cause says why it decided
    so when the decision itself is a symptom. Proxy headers from a peer that is
    not in ``proxy.trusted_proxies`` leave the gateway blind to the address the
    visitor opened, so it calls the page's own origin foreign: telling that
    visitor to add the origin to ``auth.allowed_origins`` sends the operator
    the wrong way. ``refusal`` and ``anomaly`` are what the page (or the
    doctor) matches on; ``fix`` is a configuration snippet and ``then`` the
    command that applies it, ``{peer}`` standing for the proxy's address.
    """

    code: str
    refusal: str
    anomaly: str
    title: str
    message: str
    fix: str
    then: str

    def fix_for(self, peer: str | None) -> str:
        """``fix`` for one proxy address, quoted when YAML would misread it (IPv6)."""
        shown = peer or "127.0.0.1"
        return self.fix.format(peer=f'"{shown}"' if ":" in shown else shown)


UNTRUSTED_PROXY = Cause(
    code="untrusted_proxy",
    refusal="origin_not_allowed",  # Denial.ORIGIN_NOT_ALLOWED
    anomaly="untrusted_proxy_headers",
    title="The gateway does not trust its reverse proxy",
    message=(
        "This page came through a reverse proxy that is not in proxy.trusted_proxies, so the "
        "gateway ignored the proxy's headers and cannot see the address you opened: it took this "
        "page for another site. On the gateway host, add the proxy to the configuration file as "
        "below, then run `edge gateway reload`; this page connects by itself."
    ),
    fix="proxy:\n  trusted_proxies: [{peer}]",
    then="edge gateway reload",
)
CAUSES: tuple[Cause, ...] = (UNTRUSTED_PROXY,)


def causes_table() -> dict[str, dict[str, str]]:
    """The causes as ``GET /api/refusals`` serves them beside the close reasons."""
    return {
        cause.code: {
            "refusal": cause.refusal,
            "anomaly": cause.anomaly,
            "title": cause.title,
            "message": cause.message,
            "fix": cause.fix,
            "then": cause.then,
        }
        for cause in CAUSES
    }

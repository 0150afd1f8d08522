"""Where the gateway token comes from, in one place for the server, the CLI and the doctor.

Order: ``auth.token`` (or ``$EDGE_GATEWAY_TOKEN``, already merged by the config
loader), then ``auth.token_file``, then ``<data_dir>/gateway_token``, which is
generated (0600) on first start of a loopback-bound gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.config import Settings
from edge.pairing.tokens import generate_secret, read_or_create_secret_file, write_secret_file

GENERATED_TOKEN_NAME = "gateway_token"


class GatewayTokenError(Exception):
    """The gateway token cannot be had; the message says what to do."""


@dataclass(frozen=True)
class GatewayToken:
    value: str
    source: str  # "auth.token", "EDGE_GATEWAY_TOKEN", "auth.token_file", or "generated"
    path: Path | None

    def __repr__(self) -> str:  # never print the secret by accident
        return f"GatewayToken(source={self.source!r}, path={self.path!r})"


def generated_token_path(settings: Settings) -> Path:
    return settings.data_dir / GENERATED_TOKEN_NAME


def load_gateway_token(settings: Settings, *, create: bool) -> GatewayToken:
    """Return the gateway token; create the generated one only when ``create`` and allowed."""
    auth = settings.auth
    if auth.token is not None:
        return GatewayToken(auth.token, "auth.token", None)
    if auth.token_file is not None:
        try:
            value = auth.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GatewayTokenError(
                f"auth.token_file: cannot read {auth.token_file} ({exc.strerror}); "
                "create it with `edge token generate` or fix the path"
            ) from None
        if len(value) < 24:
            raise GatewayTokenError(
                f"auth.token_file: {auth.token_file} holds no usable token (under 24 characters); "
                "run `edge token generate`"
            )
        return GatewayToken(value, "auth.token_file", auth.token_file)
    path = generated_token_path(settings)
    if path.exists() or create:
        if not path.exists() and not settings.server.binds_loopback:
            raise GatewayTokenError(
                f"server.host is {settings.server.host!r} (reachable from other machines) but no "
                "gateway token is configured: run `edge token generate` (or `edge doctor "
                "--generate-gateway-token`), or set auth.token_file, then start again"
            )
        try:
            value = read_or_create_secret_file(path)
        except OSError as exc:
            raise GatewayTokenError(f"data_dir: cannot create {path} ({exc})") from None
        return GatewayToken(value, "generated", path)
    raise GatewayTokenError(
        f"no gateway token yet: start the gateway once, or run `edge token generate` "
        f"(it will be kept in {path})"
    )


def rotate_gateway_token(settings: Settings) -> GatewayToken:
    """Write a new token to the file the gateway reads it from (configured or generated)."""
    if settings.auth.token is not None:
        raise GatewayTokenError(
            "the gateway token is set inline (auth.token or EDGE_GATEWAY_TOKEN); "
            "change it there, or move it to auth.token_file so edge can rotate it"
        )
    path = settings.auth.token_file or generated_token_path(settings)
    value = generate_secret()
    write_secret_file(path, value)
    source = "auth.token_file" if settings.auth.token_file else "generated"
    return GatewayToken(value, source, path)

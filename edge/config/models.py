"""The settings models: the YAML shape of DESIGN.md, each key validated where it is declared.

Every bound and every cross-key rule lives on the model that owns the key, so
a problem is reported against that key (``proxy.trusted_proxies[2]: ...``).
Reading files, the environment and secrets is ``edge.config.loading``'s job.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.config.durations import parse_duration
from edge.net import NetworkSet, normalise_origin, parse_network
from edge.net.origin import check_public_url
from edge.pairing.store.urls import backend_of

CONFIG_ENV = "EDGE_CONFIG"
TOKEN_ENV = "EDGE_GATEWAY_TOKEN"
# Every other secret can come from the environment too; each NAME has a NAME_FILE variant
# naming a file that holds it (as container secrets and systemd credentials are handed over).
TOKEN_FILE_ENV = TOKEN_ENV + "_FILE"
STORE_PASSWORD_ENV = "EDGE_STORE_PASSWORD"
METRICS_TOKEN_ENV = "EDGE_METRICS_TOKEN"
FILE_SUFFIX = "_FILE"
SECRET_FILE_MAX = 64 * 1024
HEADER_NAMES = ("forwarded", "x-forwarded-for", "x-real-ip")
RESERVED_PREFIXES = ("/api/", "/ws", "/ui/", "/healthz", "/readyz", "/auth/")
# What the gateway serves itself on its port: exact paths, and trees (a prefix and all below).
SERVED_EXACT = ("/", "/favicon.ico")
SERVED_TREES = ("/api", "/ws", "/ui", "/auth", "/healthz", "/readyz")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$"
)
_ORIGIN = re.compile(r"^(https?)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$")


# The JSON Schema of an optional duration key: seconds, or text such as 90d (parse_duration).
_OPTIONAL_DURATION: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdSMHD]?\s*$"},
        {"type": "null"},
    ]
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _check_networks(entries: list[str], *, allow_unix: bool) -> list[str]:
    NetworkSet.parse(entries, allow_unix_word=allow_unix)
    return entries


def _check_host(value: str) -> str:
    value = value.strip().lower()
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        if not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not an IP address or host name") from None
    return value.strip("[]")


class ServerSettings(_Section):
    """Where `edge serve` listens, and the bounds it keeps on each connection."""

    host: str = "127.0.0.1"
    port: int = Field(18789, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    graceful_timeout: float = Field(10.0, gt=0, le=600)
    # Request heads (edge.heads): bounded in size, in time, and in connections per address.
    max_head_bytes: int = Field(64 * 1024, ge=4096, le=1024 * 1024)
    head_timeout: float = Field(10.0, gt=0, le=300)
    max_connections_per_address: int = Field(256, ge=1, le=100_000)
    # How other devices reach the dashboard (the reverse proxy's address): invites, their QR
    # codes and printed commands use it, since the address Edge binds is often loopback.
    public_url: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        return None if value is None else check_public_url(value)

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class ProxySettings(_Section):
    """Which peers may say who the client is, and in which header."""

    trusted_proxies: list[str] = []
    client_ip_headers: list[str] = ["x-forwarded-for"]

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted(cls, value: list[str]) -> list[str]:
        _check_networks(value, allow_unix=True)
        for index, entry in enumerate(value):
            if entry.strip().lower() == "unix":
                continue
            if parse_network(entry).prefixlen == 0:
                raise ValueError(
                    f"[{index}]: {entry!r} trusts every address, so any client could forge its "
                    "address; list only the addresses of your reverse proxies"
                )
        return value

    @field_validator("client_ip_headers")
    @classmethod
    def _headers(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        normalised = []
        for index, name in enumerate(value):
            lowered = name.strip().lower()
            if lowered not in HEADER_NAMES:
                raise ValueError(
                    f"[{index}]: {name!r} is not a supported header (use one of: "
                    + ", ".join(HEADER_NAMES)
                    + ")"
                )
            if lowered in seen:
                raise ValueError(f"[{index}]: {name!r} is listed twice")
            seen.add(lowered)
            normalised.append(lowered)
        return normalised


class LocalSettings(_Section):
    """Who is local, that is, approved as admin without any token."""

    loopback: bool = True
    # uid: a loopback client is local only if its connection belongs to the gateway's OS
    # user (the kernel says so); address: the loopback address alone decides (weaker)
    peer_check: Literal["uid", "address"] = "uid"
    networks: list[str] = []
    hosts: list[str] = []

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value, allow_unix=False)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        result = []
        for index, host in enumerate(value):
            lowered = host.strip().lower().rstrip(".")
            if not _HOSTNAME.match(lowered):
                raise ValueError(f"[{index}]: {host!r} is not a host name")
            result.append(lowered)
        return result


class RateLimitSettings(_Section):
    """How many failed credentials a client may present before a lockout."""

    failures: int = Field(10, ge=1, le=100_000)
    window: float = Field(60, gt=0, le=86_400)
    lockout: float = Field(300, gt=0, le=86_400 * 7)
    # IPv6 clients are throttled per prefix: one subscriber holds a whole /64.
    ipv6_prefix: int = Field(64, json_schema_extra={"minimum": 32, "maximum": 128})

    @field_validator("ipv6_prefix", mode="before")
    @classmethod
    def _ipv6_prefix(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int) or not 32 <= value <= 128:
            raise ValueError(
                f"{value!r} must be a prefix length from 32 to 128 (64, the default, is one "
                "IPv6 subnet, what a single subscriber usually holds; 128 keys every address "
                "alone, which lets one subscriber rotate past the lockout)"
            )
        return value


class AuthSettings(_Section):
    """The gateway token, the origins allowed to use it, and the failure rate limit."""

    token: str | None = None
    token_file: Path | None = None
    allowed_origins: list[str] = []
    rate_limit: RateLimitSettings = RateLimitSettings()

    @field_validator("token")
    @classmethod
    def _token(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if len(value) < 24:
            raise ValueError(
                "is shorter than 24 characters; generate one with `edge token generate`"
            )
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        result = []
        for index, origin in enumerate(value):
            lowered = origin.strip().lower().rstrip("/")
            normalised = normalise_origin(lowered) if _ORIGIN.match(lowered) else None
            if normalised is None:
                raise ValueError(
                    f"[{index}]: {origin!r} is not an origin like 'https://app.example.com' "
                    "(scheme, host and optional port; no path, no wildcard)"
                )
            result.append(normalised)
        return result

    @model_validator(mode="after")
    def _one_source(self) -> AuthSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set either auth.token or auth.token_file, not both")
        return self


class PairingSettings(_Section):
    """Pending pairing requests, unauthenticated sockets and idle devices."""

    request_ttl: float = Field(300, gt=0, le=86_400)
    # how long a device an operator declined may not ask again (0: at once)
    decline_cooldown: float = Field(600, ge=0, le=30 * 86_400)
    max_pending: int = Field(256, ge=1, le=1_000_000)
    max_pending_per_client: int = Field(8, ge=1, le=10_000)
    handshake_timeout: float = Field(10, gt=0, le=300)
    max_unauthenticated_sockets_per_client: int = Field(32, ge=1, le=100_000)
    device_idle_expiry: float | None = Field(
        None,
        gt=0,
        # seconds, or a duration such as 90d (``_duration`` below reads it)
        json_schema_extra=_OPTIONAL_DURATION,
    )

    # Devices a local client paired (approved by "local", never by an operator): every
    # browser profile on the gateway host makes one, so they pile up unless they expire.
    local_device_idle_expiry: float | None = Field(
        30 * 86_400.0,
        gt=0,
        json_schema_extra=_OPTIONAL_DURATION,
    )

    @field_validator("device_idle_expiry", "local_device_idle_expiry", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value


class StoreSettings(_Section):
    """Where devices and pairing state live: SQLite in data_dir, or Redis."""

    url: str | None = None
    # The Redis password, kept out of the URL (and the YAML): put into store.url at load.
    password_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if backend_of(value) is None:
            raise ValueError(
                f"{value.split(':', 1)[0]!r}... is not a store URL "
                "(use sqlite:///path/to/edge.db or redis://host:port/db)"
            )
        return value


class MetricsSettings(_Section):
    """The Prometheus endpoint: who may read it, and on which listener."""

    enabled: bool = True
    path: str = "/metrics"
    allowed_networks: list[str] = []
    bearer_token: str | None = None
    bearer_token_file: Path | None = None
    # A listener of their own (host:port) instead of the gateway's port, e.g. for a
    # Prometheus on an internal interface while the gateway's port faces the proxy.
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)

    @property
    def on_gateway_port(self) -> bool:
        """Whether the gateway's own listener serves ``path``."""
        return self.enabled and self.port is None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in "?# "):
            raise ValueError(f"{value!r} must be an absolute path like '/metrics'")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value, allow_unix=False)

    @field_validator("bearer_token")
    @classmethod
    def _bearer(cls, value: str | None) -> str | None:
        if value is not None and len(value.strip()) < 16:
            raise ValueError("is shorter than 16 characters")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _one_token_source(self) -> MetricsSettings:
        if self.bearer_token is not None and self.bearer_token_file is not None:
            raise ValueError(
                "set either metrics.bearer_token or metrics.bearer_token_file, not both"
            )
        return self


class UpstreamSettings(_Section):
    """One upstream service: on a host of its own (``host``), or under a path of Edge's origin.

    An app on the control origin can do whatever an admin who opens the
    dashboard can (its scripts share the dashboard's origin), so a
    path-prefix upstream there needs ``share_control_origin: true``; its
    responses may not set Edge's cookies and are sandboxed unless
    ``sandbox: false``.
    """

    host: str | None = None
    prefix: str | None = None
    url: str
    name: str | None = None
    websocket: bool = False
    strip_prefix: bool = False
    share_control_origin: bool = False
    sandbox: bool = True
    timeout: float = Field(30, gt=0, le=3600)
    connect_timeout: float = Field(5, gt=0, le=300)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.strip().lower().rstrip(".")
        if not _HOSTNAME.match(host) or "_" in host:
            raise ValueError(f"{value!r} is not a host name (like 'grafana.example.com')")
        return host

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not value.startswith("/") or not value.endswith("/"):
            raise ValueError(f"{value!r} must start and end with '/' (like '/app/')")
        on_own_host = info.data.get("host") is not None
        if not on_own_host and any(
            value.startswith(r) or r.startswith(value) for r in RESERVED_PREFIXES
        ):
            raise ValueError(f"{value!r} overlaps a path the gateway serves itself")
        return value

    @model_validator(mode="after")
    def _origin(self) -> UpstreamSettings:
        if self.host is not None:
            if self.share_control_origin:
                raise ValueError(
                    f"share_control_origin: upstream on host {self.host!r} has an origin of its "
                    "own; remove share_control_origin"
                )
            return self
        if self.prefix is None:
            raise ValueError(
                "host: each upstream needs a host of its own (host: app.example.com), or a "
                "prefix on Edge's origin together with share_control_origin: true"
            )
        if not self.share_control_origin:
            raise ValueError(
                f"share_control_origin: upstream prefix {self.prefix!r} would be served on the "
                "dashboard's own origin, where the app's scripts can act as any admin who opens "
                "the dashboard. Give it a host of its own (upstreams[].host, a name your proxy "
                "routes to Edge), or, if you trust the app like an admin, set "
                "share_control_origin: true"
            )
        return self

    @property
    def on_control_origin(self) -> bool:
        """Whether this upstream is served on the dashboard's origin (a path prefix, no host)."""
        return self.host is None

    @property
    def path_prefix(self) -> str:
        """The path prefix it serves: ``prefix``, or ``/`` (all of it) on a host of its own."""
        return self.prefix or "/"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9_-]{1,40}$", value):
            raise ValueError(
                f"{value!r} must be 1-40 of a-z, 0-9, '_' or '-' (it is a metric label)"
            )
        return value

    @property
    def label(self) -> str:
        """Bounded metric label: the configured name, else the prefix without slashes."""
        if self.name:
            return self.name
        if self.host is not None:
            return re.sub(r"[^a-z0-9_-]", "_", self.host)[:40]
        return self.path_prefix.strip("/").replace("/", "_") or "root"


class LoggingSettings(_Section):
    """Log level, text or JSON lines, and the access log."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access_log: bool = False


NOTIFIABLE_EVENTS = frozenset(
    {
        "pairing.requested",
        "pairing.resolved",
        "device.paired",
        "device.revoked",
        "device.renamed",
        "device.expired",
        "invite.used",
        "auth.lockout",
    }
)


class WebhookSettings(_Section):
    """One webhook: where events are sent and the secret they are signed with."""

    url: str
    secret: str | None = None  # exactly one of secret and secret_file; load fills secret
    secret_file: Path | None = None
    events: list[str] = ["pairing.requested", "pairing.resolved", "device.revoked", "auth.lockout"]
    timeout: float = Field(5, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+(/\S*)?$", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("is empty, so this webhook would never be called")
        allowed = ", ".join(sorted(NOTIFIABLE_EVENTS))
        problems = [
            f"[{position}]: {name!r} is not an event (one of: {allowed})"
            for position, name in enumerate(value)
            if name not in NOTIFIABLE_EVENTS
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("is shorter than 16 characters")
        return value

    @model_validator(mode="after")
    def _one_secret_source(self) -> WebhookSettings:
        if (self.secret is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret and secret_file")
        return self

    @property
    def signing_secret(self) -> str:
        """The secret deliveries are signed with (``load_settings`` reads ``secret_file``)."""
        if self.secret is None:
            raise RuntimeError("webhook secret_file was not read; load settings with load_settings")
        return self.secret


class NotifySettings(_Section):
    """Webhooks for pairing, device and lockout events, and their delivery queue."""

    webhooks: list[WebhookSettings] = []
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    max_attempts: int = Field(8, ge=1, le=100)


class Settings(_Section):
    """An Edge gateway configuration."""

    server: ServerSettings = ServerSettings()
    data_dir: Path = Path("./data")
    proxy: ProxySettings = ProxySettings()
    local: LocalSettings = LocalSettings()
    auth: AuthSettings = AuthSettings()
    pairing: PairingSettings = PairingSettings()
    store: StoreSettings = StoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    upstreams: list[UpstreamSettings] = []
    logging: LoggingSettings = LoggingSettings()
    notify: NotifySettings = NotifySettings()
    source: str | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _upstreams_unique(self) -> Settings:
        seen: set[str] = set()
        for upstream in self.upstreams:
            if upstream.label in seen:
                raise ValueError(
                    f"upstreams: two upstreams share the name {upstream.label!r}; give one a 'name'"
                )
            seen.add(upstream.label)
        if self.metrics.on_gateway_port:
            shadowed = _metrics_path_clash(self.metrics.path, self.upstreams)
            if shadowed is not None:
                raise ValueError(
                    f"metrics.path: {self.metrics.path!r} is {shadowed}; the guard lets the "
                    "metrics path through without a device, so it must not share a path with "
                    "anything else (use a path of its own such as '/metrics')"
                )
        if self.metrics.port is not None and self.metrics.port == self.server.port:
            raise ValueError(
                f"metrics.port: {self.metrics.port} is also server.port; the metrics listener "
                "needs a port of its own (or remove metrics.port to serve metrics on the "
                "gateway's port)"
            )
        return self


def _metrics_path_clash(path: str, upstreams: list[UpstreamSettings]) -> str | None:
    """What ``path`` would shadow on the gateway's port, or None when it is a path of its own.

    A route the guard waves through must never be one that acts on a caller's
    authority: ``metrics.path: /api/invites`` once let anonymous clients reach
    the invite handler.
    """
    if path in SERVED_EXACT:
        return f"a path the gateway serves itself ({path})"
    trimmed = path.rstrip("/") or "/"
    for tree in SERVED_TREES:
        if trimmed == tree or path.startswith(tree + "/"):
            return f"equal to or under {tree}, which the gateway serves itself"
    for index, upstream in enumerate(upstreams):
        if not upstream.on_control_origin:
            continue  # routed by its own host: it shares no path with the gateway's origin
        prefix = upstream.path_prefix
        if path.startswith(prefix) or trimmed == prefix.rstrip("/"):
            return f"under upstreams[{index}].prefix {prefix!r}"
    return None

"""Configuration: the YAML shape of DESIGN.md, validated once into typed settings.

``models`` declares every key and its bounds, ``loading`` reads the file,
the environment and secret files into ``Settings`` (or one ``ConfigError``
line per problem), and ``policies`` turns settings into the values the
gateway and the CLI decide with. The names below are the public surface.
"""

from __future__ import annotations

from edge.config.loading import ConfigError, load_settings, parse_yaml
from edge.config.models import (
    CONFIG_ENV,
    FILE_SUFFIX,
    HEADER_NAMES,
    METRICS_TOKEN_ENV,
    NOTIFIABLE_EVENTS,
    RESERVED_PREFIXES,
    SECRET_FILE_MAX,
    SERVED_EXACT,
    SERVED_TREES,
    STORE_PASSWORD_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AuthSettings,
    LocalSettings,
    LoggingSettings,
    MetricsSettings,
    NotifySettings,
    PairingSettings,
    ProxySettings,
    RateLimitSettings,
    ServerSettings,
    Settings,
    StoreSettings,
    UpstreamSettings,
    WebhookSettings,
    parse_duration,
)

__all__ = [
    "CONFIG_ENV",
    "FILE_SUFFIX",
    "HEADER_NAMES",
    "METRICS_TOKEN_ENV",
    "NOTIFIABLE_EVENTS",
    "RESERVED_PREFIXES",
    "SECRET_FILE_MAX",
    "SERVED_EXACT",
    "SERVED_TREES",
    "STORE_PASSWORD_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "AuthSettings",
    "ConfigError",
    "LocalSettings",
    "LoggingSettings",
    "MetricsSettings",
    "NotifySettings",
    "PairingSettings",
    "ProxySettings",
    "RateLimitSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "UpstreamSettings",
    "WebhookSettings",
    "load_settings",
    "parse_duration",
    "parse_yaml",
]

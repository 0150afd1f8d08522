"""Configuration: the YAML shape of DESIGN.md, validated once into typed settings.

``models`` declares every key and its bounds, ``loading`` reads the file,
the environment and secret files into ``Settings`` (or one ``ConfigError``
line per problem), ``environment`` names every key's ``EDGE_`` variable,
``schema`` makes the JSON Schema of a file from the models, and ``policies``
turns settings into the values the gateway and the CLI decide with. The names
below are the public surface.
"""

from __future__ import annotations

from edge.config.durations import parse_duration
from edge.config.environment import environment_keys
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
)
from edge.config.schema import config_schema

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
    "config_schema",
    "environment_keys",
    "load_settings",
    "parse_duration",
    "parse_yaml",
]

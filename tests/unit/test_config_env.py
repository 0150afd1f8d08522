"""Every configuration key from its ``EDGE_SECTION__KEY`` variable, over the file and the defaults.

Each variable of ``environment_keys`` is set once, alone, to a value that is not its
default, and the loaded settings must hold that value: a key without a sample
here, or a sample for a key that is gone, fails, so the table cannot drift.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, load_settings
from edge.config.environment import environment_keys, variable_name

TOKEN = "t" * 32
UPSTREAM = {"host": "grafana.example.com", "url": "http://127.0.0.1:3000"}
WEBHOOK = {"url": "https://hooks.example.com/edge", "secret": "s" * 20}

# key -> (the variable's value, what the loaded setting then is)
SAMPLES: dict[str, tuple[str, Any]] = {
    "server.host": ("0.0.0.0", "0.0.0.0"),
    "server.port": ("8080", 8080),
    "server.workers": ("3", 3),
    "server.graceful_timeout": ("2.5", 2.5),
    "server.max_head_bytes": ("8192", 8192),
    "server.head_timeout": ("4", 4.0),
    "server.max_connections_per_address": ("9", 9),
    "server.public_url": ("https://edge.example.com/", "https://edge.example.com"),
    "data_dir": ("/srv/edge", Path("/srv/edge")),
    "proxy.trusted_proxies": ('["127.0.0.1", "unix"]', ["127.0.0.1", "unix"]),
    "proxy.client_ip_headers": ('["X-Real-IP"]', ["x-real-ip"]),
    "local.loopback": ("false", False),
    "local.peer_check": ("address", "address"),
    "local.networks": ('["192.168.1.0/24"]', ["192.168.1.0/24"]),
    "local.hosts": ('["edge.lan"]', ["edge.lan"]),
    "auth.token": (TOKEN, TOKEN),
    "auth.token_file": ("/run/secrets/edge", Path("/run/secrets/edge")),
    "auth.allowed_origins": ('["https://app.example.com"]', ["https://app.example.com"]),
    "auth.rate_limit.failures": ("3", 3),
    "auth.rate_limit.window": ("30", 30.0),
    "auth.rate_limit.lockout": ("60", 60.0),
    "auth.rate_limit.ipv6_prefix": ("48", 48),
    "pairing.request_ttl": ("60", 60.0),
    "pairing.decline_cooldown": ("120", 120.0),
    "pairing.max_pending": ("5", 5),
    "pairing.max_pending_per_client": ("2", 2),
    "pairing.handshake_timeout": ("3", 3.0),
    "pairing.max_unauthenticated_sockets_per_client": ("4", 4),
    "pairing.device_idle_expiry": ("90d", 90 * 86400.0),
    "pairing.local_device_idle_expiry": ("7d", 7 * 86400.0),
    "store.url": ("redis://redis.internal:6379/0", "redis://redis.internal:6379/0"),
    "metrics.enabled": ("false", False),
    "metrics.path": ("/prom", "/prom"),
    "metrics.allowed_networks": ('["10.0.0.0/8"]', ["10.0.0.0/8"]),
    "metrics.bearer_token": ("m" * 20, "m" * 20),
    "metrics.host": ("0.0.0.0", "0.0.0.0"),
    "metrics.port": ("9100", 9100),
    "logging.level": ("debug", "debug"),
    "logging.format": ("json", "json"),
    "logging.access_log": ("true", True),
    "notify.queue_size": ("10", 10),
    "notify.max_attempts": ("2", 2),
}
# Keys whose loaded value is not the variable's text: lists of sections, and secret files.
OTHER_KEYS = ("upstreams", "notify.webhooks", "store.password_file", "metrics.bearer_token_file")


def _get(settings: Any, key: str) -> Any:
    for part in key.split("."):
        settings = getattr(settings, part)
    return settings


def test_every_key_has_a_variable_and_a_sample_here() -> None:
    keys = set(environment_keys().values())
    assert keys == set(SAMPLES) | set(OTHER_KEYS)
    assert environment_keys()["EDGE_AUTH__RATE_LIMIT__IPV6_PREFIX"] == "auth.rate_limit.ipv6_prefix"


@pytest.mark.parametrize("key", sorted(SAMPLES))
def test_each_variable_sets_its_key(key: str) -> None:
    value, expected = SAMPLES[key]
    default = _get(load_settings(None, environ={}), key)
    assert default != expected, f"the sample for {key} is its default"
    settings = load_settings(None, environ={variable_name(tuple(key.split("."))): value})
    assert _get(settings, key) == expected


def test_lists_of_sections_are_one_json_value() -> None:
    settings = load_settings(
        None,
        environ={
            "EDGE_UPSTREAMS": json.dumps([UPSTREAM]),
            "EDGE_NOTIFY__WEBHOOKS": json.dumps([WEBHOOK]),
        },
    )
    assert [(u.host, u.url) for u in settings.upstreams] == [(UPSTREAM["host"], UPSTREAM["url"])]
    assert [(h.url, h.signing_secret) for h in settings.notify.webhooks] == [
        (WEBHOOK["url"], WEBHOOK["secret"])
    ]


def test_secret_file_variables_are_read_like_the_file_keys(tmp_path: Path) -> None:
    (tmp_path / "metrics").write_text("b" * 20 + "\n", encoding="utf-8")
    (tmp_path / "redis").write_text("pw\n", encoding="utf-8")
    settings = load_settings(
        None,
        environ={
            "EDGE_METRICS__BEARER_TOKEN_FILE": str(tmp_path / "metrics"),
            "EDGE_STORE__URL": "redis://edge@redis.internal:6379/0",
            "EDGE_STORE__PASSWORD_FILE": str(tmp_path / "redis"),
        },
    )
    assert settings.metrics.bearer_token == "b" * 20
    assert settings.store.url == "redis://edge:pw@redis.internal:6379/0"


def test_a_variable_wins_over_the_file_and_keeps_the_rest_of_its_section(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("server:\n  host: 0.0.0.0\n  port: 9000\n", encoding="utf-8")
    settings = load_settings(config, environ={"EDGE_SERVER__PORT": "9001"})
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 9001)
    assert load_settings(config, environ={}).server.port == 9000


def test_relative_paths_in_variables_are_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("{}\n", encoding="utf-8")
    settings = load_settings(config, environ={"EDGE_DATA_DIR": "state"})
    assert settings.data_dir == (tmp_path / "state").resolve()


def test_the_gateway_token_variables_still_win_over_the_key_variables() -> None:
    other = "o" * 30
    settings = load_settings(None, environ={"EDGE_AUTH__TOKEN": other, "EDGE_GATEWAY_TOKEN": TOKEN})
    assert settings.auth.token == TOKEN


def test_null_unsets_a_key() -> None:
    settings = load_settings({"metrics": {"port": 9100}}, environ={"EDGE_METRICS__PORT": "null"})
    assert settings.metrics.port is None


@pytest.mark.parametrize(
    ("environ", "line"),
    [
        (
            {"EDGE_SERVER__PORT": "99999"},
            "EDGE_SERVER__PORT: Input should be less than or equal to 65535",
        ),
        (
            {"EDGE_SERVER__PORT": "port"},
            "EDGE_SERVER__PORT: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            {"EDGE_PROXY__TRUSTED_PROXIES": '["10.0.0.1", "0.0.0.0/0"]'},
            "EDGE_PROXY__TRUSTED_PROXIES[1]: '0.0.0.0/0' trusts every address",
        ),
        (
            {"EDGE_PROXY__TRUSTED_PROXIES": "10.0.0.1"},
            "EDGE_PROXY__TRUSTED_PROXIES: is not JSON (",
        ),
        ({"EDGE_UPSTREAMS": '[{"url": "http://127.0.0.1:3000"}]'}, "EDGE_UPSTREAMS[0]: host: "),
        ({"EDGE_LOGGING__LEVEL": "loud"}, "EDGE_LOGGING__LEVEL: Input should be "),
        ({"EDGE_SERVER__PROT": "1"}, "EDGE_SERVER__PROT: names no configuration key"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(environ: dict[str, str], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ=environ)
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(line)


def test_a_secret_in_a_bad_variable_is_not_repeated() -> None:
    secret = "not-json-" + "x" * 30
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"EDGE_UPSTREAMS": secret})
    assert secret not in str(caught.value)


def test_other_edge_variables_are_left_alone() -> None:
    environ = {"EDGE_PAIR_DIR": "/tmp/pair", "EDGE_SOURCE": "x", "edge_server__port": "1"}
    settings = load_settings(None, environ=environ)
    assert settings.source is None
    assert settings.server.port == 18789

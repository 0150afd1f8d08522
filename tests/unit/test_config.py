"""Configuration: every bad value is one line naming the key; nothing is silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_settings


def problems_of(config: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(config)  # type: ignore[arg-type]
    return info.value.problems


def test_defaults_match_the_design() -> None:
    settings = load_settings({}, environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 18789
    assert settings.proxy.trusted_proxies == []
    assert settings.proxy.client_ip_headers == ["x-forwarded-for"]
    assert settings.local.loopback is True
    assert settings.auth.rate_limit.failures == 10
    assert settings.auth.rate_limit.window == 60
    assert settings.auth.rate_limit.lockout == 300
    assert settings.pairing.request_ttl == 300
    assert settings.pairing.max_pending == 256
    assert settings.pairing.max_pending_per_client == 8
    assert settings.pairing.handshake_timeout == 10
    assert settings.metrics.path == "/metrics"


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "edge.yaml"
    settings = load_settings(example, environ={})
    assert settings.data_dir == (example.parent / "data").resolve()


def test_cidr_with_host_bits_names_the_key_and_index() -> None:
    found = problems_of({"proxy": {"trusted_proxies": ["127.0.0.1", "::1", "10.0.0.5/24"]}})
    assert len(found) == 1
    assert found[0].startswith("proxy.trusted_proxies[2]: '10.0.0.5/24' has host bits set")
    assert "10.0.0.0/24" in found[0]


def test_every_bad_entry_is_reported_not_just_the_first() -> None:
    found = problems_of(
        {
            "proxy": {"client_ip_headers": ["x-client-ip"]},
            "server": {"port": 70000},
            "local": {"networks": ["192.168.1.0/33"]},
        }
    )
    keys = sorted(p.split(":")[0] for p in found)
    assert keys == ["local.networks[0]", "proxy.client_ip_headers[0]", "server.port"]


def test_unknown_key_is_an_error_listing_the_allowed_keys() -> None:
    found = problems_of({"proxy": {"trusted_proxy": ["127.0.0.1"]}})
    assert found == [
        "proxy.trusted_proxy: unknown key (allowed: trusted_proxies, client_ip_headers)"
    ]


def test_unknown_top_level_key_is_an_error() -> None:
    assert problems_of({"proxies": {}})[0].startswith("proxies: unknown key (allowed: server,")


def test_trusting_everything_is_refused() -> None:
    found = problems_of({"proxy": {"trusted_proxies": ["0.0.0.0/0"]}})
    assert found[0].startswith("proxy.trusted_proxies[0]: '0.0.0.0/0' trusts every address")


def test_unix_word_is_accepted_for_trusted_proxies_only() -> None:
    assert load_settings({"proxy": {"trusted_proxies": ["unix"]}}, environ={})
    assert problems_of({"local": {"networks": ["unix"]}})[0].startswith("local.networks")


def test_duplicate_header_names_are_refused() -> None:
    found = problems_of({"proxy": {"client_ip_headers": ["forwarded", "Forwarded"]}})
    assert found == ["proxy.client_ip_headers[1]: 'Forwarded' is listed twice"]


def test_short_inline_token_is_refused() -> None:
    assert problems_of({"auth": {"token": "hunter2"}})[0].startswith("auth.token: is shorter")


def test_token_and_token_file_together_are_refused() -> None:
    found = problems_of({"auth": {"token": "x" * 40, "token_file": "/tmp/t"}})
    assert "not both" in found[0]


def test_env_token_overrides_and_is_validated() -> None:
    settings = load_settings({}, environ={"EDGE_GATEWAY_TOKEN": "t" * 43})
    assert settings.auth.token == "t" * 43
    with pytest.raises(ConfigError) as info:
        load_settings({}, environ={"EDGE_GATEWAY_TOKEN": "short"})
    assert info.value.problems[0].startswith("EDGE_GATEWAY_TOKEN:")


def test_edge_config_env_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "edge.yaml"
    path.write_text("server:\n  port: 9999\n")
    settings = load_settings(None, environ={"EDGE_CONFIG": str(path)})
    assert settings.server.port == 9999
    assert settings.data_dir == tmp_path / "data"


def test_yaml_syntax_error_has_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: [1,\n")
    found = problems_of(path)
    assert found[0].startswith(f"{path}:")


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("proxy:\n  trusted_proxies: [127.0.0.1]\nproxy:\n  trusted_proxies: []\n")
    assert "duplicate key 'proxy'" in problems_of(path)[0]


def test_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == [
        f"{tmp_path / 'nope.yaml'}: no such configuration file"
    ]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    assert "top level must be a mapping" in problems_of(path)[0]


@pytest.mark.parametrize(
    ("origin", "ok"),
    [
        ("https://app.example.com", True),
        ("http://127.0.0.1:8080", True),
        ("*", False),
        ("https://app.example.com/path", False),
        ("app.example.com", False),
    ],
)
def test_allowed_origins_must_be_origins(origin: str, ok: bool) -> None:
    config = {"auth": {"allowed_origins": [origin]}}
    if ok:
        assert load_settings(config, environ={}).auth.allowed_origins == [origin]
    else:
        assert problems_of(config)[0].startswith("auth.allowed_origins[0]:")


def test_upstream_prefix_must_not_shadow_gateway_paths() -> None:
    found = problems_of({"upstreams": [{"prefix": "/api/", "share_control_origin": True, "url": "http://127.0.0.1:1"}]})
    assert found[0].startswith("upstreams[0].prefix:")


def test_upstream_needs_url_and_prefix() -> None:
    found = problems_of({"upstreams": [{"prefix": "/app/"}]})
    assert found == ["upstreams[0].url: is required"]


def test_wrong_types_name_the_key() -> None:
    found = problems_of({"pairing": {"max_pending": "many"}})
    assert found[0].startswith("pairing.max_pending:")


def test_unknown_webhook_events_fail_the_config_check_not_the_server() -> None:
    hook = {"url": "http://127.0.0.1:9/hook", "secret": "s" * 20, "events": ["pairing.requested", "nope"]}
    found = problems_of({"notify": {"webhooks": [hook]}})
    assert found[0].startswith("notify.webhooks[0].events[1]: 'nope' is not an event")
    assert problems_of({"notify": {"webhooks": [{**hook, "events": []}]}})[0].startswith(
        "notify.webhooks[0].events: is empty"
    )


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45", 45.0)])
def test_device_idle_expiry_takes_durations(text: str, seconds: float) -> None:
    settings = load_settings({"pairing": {"device_idle_expiry": text}}, environ={})
    assert settings.pairing.device_idle_expiry == seconds


def test_a_bad_duration_names_the_key() -> None:
    found = problems_of({"pairing": {"device_idle_expiry": "ninety days"}})
    assert found[0].startswith("pairing.device_idle_expiry: 'ninety days' is not a duration")

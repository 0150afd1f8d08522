"""Every secret can come from a file or the environment, and no output shows one.

The gateway token, the Redis password, webhook secrets and the metrics token
are each read from a ``*_file`` key or an ``EDGE_*`` variable (with a
``_FILE`` variant); ``edge config show``, ``edge config check`` and
``edge doctor`` mask every one of them, the password inside ``store.url``
included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from edge.cli import cli
from edge.config import ConfigError, load_settings
from edge.gateway_token import load_gateway_token
from edge.pairing.tokens import generate_secret

HOOK = "http://127.0.0.1:9/hook"


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({"data_dir": "data", **config}), encoding="utf-8")
    return path


def secret_file(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")  # as `echo` writes it
    path.chmod(0o600)
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ=environ or {})
    return info.value.problems


def test_the_metrics_token_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    token = generate_secret()
    secret_file(tmp_path, "metrics.token", token)
    path = write(tmp_path, {"metrics": {"bearer_token_file": "metrics.token"}})
    settings = load_settings(path, environ={})
    assert settings.metrics.bearer_token == token


def test_the_metrics_token_from_the_environment_wins(tmp_path: Path) -> None:
    in_file, in_env, in_env_file = generate_secret(), generate_secret(), generate_secret()
    secret_file(tmp_path, "metrics.token", in_file)
    env_file = secret_file(tmp_path, "from-env", in_env_file)
    path = write(tmp_path, {"metrics": {"bearer_token_file": "metrics.token"}})
    assert load_settings(path, environ={"EDGE_METRICS_TOKEN": in_env}).metrics.bearer_token == (
        in_env
    )
    env = {"EDGE_METRICS_TOKEN_FILE": str(env_file)}
    assert load_settings(path, environ=env).metrics.bearer_token == in_env_file


def test_a_metrics_token_set_twice_or_unreadable_is_refused(tmp_path: Path) -> None:
    both = write(
        tmp_path,
        {"metrics": {"bearer_token": generate_secret(), "bearer_token_file": "metrics.token"}},
    )
    assert any("not both" in p for p in problems(both))
    missing = write(tmp_path, {"metrics": {"bearer_token_file": "missing.token"}})
    (line,) = problems(missing)
    assert line.startswith("metrics.bearer_token_file: cannot read ") and "missing.token" in line
    secret_file(tmp_path, "short.token", "short")
    short = write(tmp_path, {"metrics": {"bearer_token_file": "short.token"}})
    assert problems(short) == ["metrics.bearer_token_file: is shorter than 16 characters"]
    secret_file(tmp_path, "empty.token", "")
    empty = write(tmp_path, {"metrics": {"bearer_token_file": "empty.token"}})
    assert problems(empty) == [f"metrics.bearer_token_file: {tmp_path / 'empty.token'} is empty"]


def test_the_redis_password_goes_into_the_url_from_a_file_or_the_environment(
    tmp_path: Path,
) -> None:
    password = "p@ss:w/rd " + generate_secret()
    secret_file(tmp_path, "redis.password", password)
    path = write(
        tmp_path,
        {"store": {"url": "redis://edge@127.0.0.1:6379/0", "password_file": "redis.password"}},
    )
    settings = load_settings(path, environ={})
    from urllib.parse import unquote, urlsplit

    url = urlsplit(settings.store.url or "")
    assert (url.username, unquote(url.password or "")) == ("edge", password)
    assert url.hostname == "127.0.0.1" and url.port == 6379 and url.path == "/0"
    from_env = generate_secret()
    bare = write(tmp_path, {"store": {"url": "redis://127.0.0.1:6379/0"}})
    env_url = load_settings(bare, environ={"EDGE_STORE_PASSWORD": from_env}).store.url
    assert urlsplit(env_url or "").password == from_env


def test_a_redis_password_given_twice_or_without_redis_is_refused(tmp_path: Path) -> None:
    env = {"EDGE_STORE_PASSWORD": generate_secret()}
    inline = write(tmp_path, {"store": {"url": "redis://:inline@127.0.0.1/0"}})
    assert any(p.startswith("store.url: carries a password") for p in problems(inline, env))
    sqlite = write(tmp_path, {})
    assert any("not a Redis URL" in p for p in problems(sqlite, env))


def test_webhook_secrets_from_files(tmp_path: Path) -> None:
    secret = generate_secret()
    secret_file(tmp_path, "hook.secret", secret)
    path = write(tmp_path, {"notify": {"webhooks": [{"url": HOOK, "secret_file": "hook.secret"}]}})
    (hook,) = load_settings(path, environ={}).notify.webhooks
    assert hook.signing_secret == secret
    neither = write(tmp_path, {"notify": {"webhooks": [{"url": HOOK}]}})
    assert problems(neither) == ["notify.webhooks[0]: set exactly one of secret and secret_file"]


def test_the_gateway_token_from_a_file_named_in_the_environment(tmp_path: Path) -> None:
    token = generate_secret()
    env_file = secret_file(tmp_path, "gateway.token", token)
    path = write(tmp_path, {"auth": {"token": generate_secret()}})
    settings = load_settings(path, environ={"EDGE_GATEWAY_TOKEN_FILE": str(env_file)})
    assert load_gateway_token(settings, create=False).value == token


def slices(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def test_config_show_check_and_doctor_mask_every_secret(tmp_path: Path) -> None:
    gateway, metrics, hook, redis_password = (generate_secret() for _ in range(4))
    secret_file(tmp_path, "hook.secret", hook)
    path = write(
        tmp_path,
        {
            "auth": {"token": gateway},
            "metrics": {"bearer_token": metrics},
            # Nothing listens on port 9: doctor reports the store unreachable, naming the URL.
            "store": {"url": f"redis://edge:{redis_password}@127.0.0.1:9/0"},
            "notify": {"webhooks": [{"url": HOOK, "secret_file": "hook.secret"}]},
        },
    )
    runner = CliRunner()
    env = {"EDGE_CONFIG": None, "EDGE_GATEWAY_TOKEN": None}
    outputs = {
        name: runner.invoke(cli, [*args, "-c", str(path)], env=env)
        for name, args in {
            "show": ["config", "show"],
            "check": ["config", "check"],
            "doctor": ["doctor"],
        }.items()
    }
    shown = json.loads(outputs["show"].output)
    assert shown["store"]["url"] == "redis://edge:***@127.0.0.1:9/0"
    assert "redis://edge:***@127.0.0.1:9/0" in outputs["check"].output
    for name, result in outputs.items():
        text = result.output
        assert text, name
        for secret in (gateway, metrics, hook, redis_password):
            assert not {piece for piece in slices(secret) if piece in text}, name

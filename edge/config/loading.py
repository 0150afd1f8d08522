"""Loading settings: YAML with unique keys, secrets from files and the environment, errors.

A bad configuration never starts a gateway, never produces a traceback and
never loses an entry silently: ``load_settings`` raises ``ConfigError`` with
one line per problem, each naming the key (unknown keys and duplicate YAML
keys are errors too).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from edge.config.environment import merge, read_environment
from edge.config.models import (
    CONFIG_ENV,
    FILE_SUFFIX,
    METRICS_TOKEN_ENV,
    SECRET_FILE_MAX,
    STORE_PASSWORD_ENV,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AuthSettings,
    MetricsSettings,
    Settings,
    WebhookSettings,
)
from edge.pairing.store.urls import backend_of, has_password, with_password


class ConfigError(Exception):
    """A configuration that cannot start a gateway; ``problems`` has one line per fault."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}:\n" + "\n".join(f"  {p}" for p in problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of keeping the last one."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in result:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
    return result


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def _format_location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _format_errors(
    error: ValidationError,
    model: type[BaseModel],
    variables: Mapping[tuple[str, ...], str] | None = None,
) -> list[str]:
    """One line per error, named by its key, or by the variable that set it (``variables``)."""
    problems = []
    for item in error.errors(include_url=False):
        loc = tuple(
            p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))
        )
        key = _format_location(loc)
        for length in range(len(loc), 0, -1):
            variable = (variables or {}).get(tuple(str(p) for p in loc[:length]))
            if variable is not None:
                rest = loc[length:]
                key = variable + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in rest)
                break
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key" + _allowed_keys_hint(model, loc[:-1])
        elif item["type"] == "missing":
            message = "is required"
        elif message.startswith("["):
            # list validators name their own indexes: "[2]: ...; [5]: ..." -> key[2]: ...
            for part in re.split(r"; (?=\[\d+\]: )", message):
                index, _, text = part.partition(": ")
                problems.append(f"{key}{index}: {text}")
            continue
        problems.append(f"{key}: {message}" if key else message)
    return problems


def _allowed_keys_hint(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        current = next((a for a in (annotation, *args) if hasattr(a, "model_fields")), None)
        if current is None:
            return ""
    names = [n for n in getattr(current, "model_fields", {}) if n != "source"]
    return f" (allowed: {', '.join(names)})" if names else ""


def parse_yaml(text: str, source: str = "<config>") -> Mapping[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError([f"{where}: {exc.problem or exc.context}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: {exc}"], source) from None
    except RecursionError:
        raise ConfigError([f"{source}: nested too deeply to be a configuration"], source) from None
    except Exception as exc:
        # PyYAML's constructors raise plain ValueError, TypeError, IndexError or
        # AttributeError for explicit tags on the wrong text (``!!int word``,
        # ``!!timestamp``) and for complex keys (``? {a: 1}``): faults in the file all the
        # same. Their messages quote the value, which may be a token: name only the kind.
        raise ConfigError(
            [
                f"{source}: not valid YAML for a configuration ({type(exc).__name__} while "
                "building a value: check explicit tags such as !!int and complex '?' keys)"
            ],
            source,
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of keys"], source)
    return data


def load_settings(
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load and validate settings from a YAML path, a mapping, or ``$EDGE_CONFIG``.

    Relative paths inside a file (``data_dir``, ``auth.token_file``) are taken
    relative to that file's directory, so a unit file can point at it from anywhere.
    Every key can also come from the environment (``EDGE_SERVER__PORT``, see
    ``edge.config.environment``): a variable wins over the file, the file over the
    defaults, so a container or a unit changes one key without its own copy of the file.
    The secret variables (``EDGE_GATEWAY_TOKEN``...) are read after, and win over both.

    Symlinked files: the configuration file and every secret file are kept
    by the path they were given, made absolute but with their symlinks
    unresolved, and read through them at every load. A Kubernetes Secret or
    ConfigMap volume is a set of symlinks into ``..data``, itself a symlink
    the kubelet swaps to a new directory (deleting the old) when the Secret
    changes; a path resolved once would go on naming the deleted directory,
    so a reload would miss the new value.
    """
    env = os.environ if environ is None else environ
    base_dir = Path.cwd()
    source: str | None = None
    if config is None and env.get(CONFIG_ENV):
        config = env[CONFIG_ENV]
    if config is None:
        data: Mapping[str, Any] = {}
    elif isinstance(config, Mapping):
        data = config
    else:
        path = Path(config)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([f"{path}: no such configuration file"], source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: cannot be read ({exc})"], source) from None
        data = parse_yaml(text, source)
        # absolute(), not resolve(): see "Symlinked files" in the docstring.
        base_dir = path.absolute().parent
    env_problems: list[str] = []
    from_env, variables = read_environment(env, env_problems)
    try:
        settings = Settings.model_validate(merge(data, from_env))
    except ValidationError as exc:
        raise ConfigError(env_problems + _format_errors(exc, Settings, variables), source) from None
    if env_problems:
        raise ConfigError(env_problems, source)
    updates: dict[str, Any] = {"source": source}
    if not settings.data_dir.is_absolute():
        updates["data_dir"] = (base_dir / settings.data_dir).resolve()
    auth_updates: dict[str, Any] = {}
    if settings.auth.token_file is not None and not settings.auth.token_file.is_absolute():
        auth_updates["token_file"] = (base_dir / settings.auth.token_file).absolute()
    env_token = env.get(TOKEN_ENV)
    if env_token:
        try:
            AuthSettings._token(env_token)
        except ValueError as exc:
            raise ConfigError([f"{TOKEN_ENV}: {exc}"], source) from None
        auth_updates["token"] = env_token.strip()
        auth_updates["token_file"] = None
    env_token_file = env.get(TOKEN_FILE_ENV)
    if env_token_file and not env_token:
        auth_updates["token"] = None
        auth_updates["token_file"] = (base_dir / env_token_file).absolute()
    if auth_updates:
        updates["auth"] = settings.auth.model_copy(update=auth_updates)
    problems: list[str] = []
    secrets = _SecretSources(env, base_dir, problems)
    token = secrets.read(
        "metrics.bearer_token",
        settings.metrics.bearer_token,
        settings.metrics.bearer_token_file,
        METRICS_TOKEN_ENV,
        MetricsSettings._bearer,
    )
    from_elsewhere = settings.metrics.bearer_token_file is not None or any(
        env.get(METRICS_TOKEN_ENV + suffix) for suffix in ("", FILE_SUFFIX)
    )
    if from_elsewhere:
        updates["metrics"] = settings.metrics.model_copy(
            update={"bearer_token": token, "bearer_token_file": None}
        )
    password = secrets.read(
        "store.password", None, settings.store.password_file, STORE_PASSWORD_ENV, _check_password
    )
    if password is not None:
        url = _url_with_password(settings.store.url, password, problems)
        updates["store"] = settings.store.model_copy(update={"url": url, "password_file": None})
    hooks = []
    for index, hook in enumerate(settings.notify.webhooks):
        secret = secrets.read(
            f"notify.webhooks[{index}].secret",
            hook.secret,
            hook.secret_file,
            None,
            WebhookSettings._secret,
        )
        hooks.append(hook.model_copy(update={"secret": secret, "secret_file": None}))
    if hooks:
        updates["notify"] = settings.notify.model_copy(update={"webhooks": hooks})
    if problems:
        raise ConfigError(problems, source)
    return settings.model_copy(update=updates)


def _check_password(value: str) -> str:
    if not value:
        raise ValueError("is empty")
    return value


def _url_with_password(url: str | None, password: str, problems: list[str]) -> str | None:
    """``store.url`` with ``password`` as the password of its user part."""
    if backend_of(url) != "redis":
        problems.append(
            "store.password_file: a password is given, but store.url is not a Redis URL "
            "(redis://host:port/db); remove the password or point store.url at Redis"
        )
        return url
    assert url is not None
    try:
        carries = has_password(url)
    except ValueError:
        return url  # the store reports the malformed URL itself, without the password
    if carries:
        problems.append(
            "store.url: carries a password while store.password_file (or "
            f"{STORE_PASSWORD_ENV}) gives one too; keep only one, preferably outside the URL"
        )
        return url
    return with_password(url, password)


class _SecretSources:
    """Reads one secret from its environment variable, ``*_FILE`` variable, file key or value.

    The environment wins over the YAML (as for ``EDGE_GATEWAY_TOKEN``): a
    deployment injects secrets without editing the file. A secret file holds
    the secret alone; surrounding whitespace (the final newline) is dropped.
    Every problem names where the secret was looked for, never its value.
    """

    def __init__(self, env: Mapping[str, str], base_dir: Path, problems: list[str]) -> None:
        self.env = env
        self.base_dir = base_dir
        self.problems = problems

    def read(
        self,
        key: str,
        inline: str | None,
        file: Path | None,
        variable: str | None,
        check: Callable[[str], str | None],
    ) -> str | None:
        where, value = key, inline
        if variable is not None and self.env.get(variable):
            where, value = variable, self.env[variable]
        elif variable is not None and self.env.get(variable + FILE_SUFFIX):
            where = variable + FILE_SUFFIX
            value = self._file(where, self.base_dir / self.env[where])
        elif file is not None:
            where = key + FILE_SUFFIX.lower()
            value = self._file(where, file if file.is_absolute() else self.base_dir / file)
        if value is None:
            return None
        try:
            return check(value.strip())
        except ValueError as exc:
            self.problems.append(f"{where}: {exc}")
            return None

    def _file(self, where: str, path: Path) -> str | None:
        try:
            with path.open("rb") as handle:
                raw = handle.read(SECRET_FILE_MAX + 1)
        except OSError as exc:
            self.problems.append(f"{where}: cannot read {path} ({exc.strerror or exc})")
            return None
        if len(raw) > SECRET_FILE_MAX:
            self.problems.append(f"{where}: {path} is over 64 KiB, not a secret file")
            return None
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problems.append(f"{where}: {path} is not UTF-8 text")
            return None
        if not text:
            self.problems.append(f"{where}: {path} is empty")
            return None
        return text

"""Every configuration key from an environment variable: ``EDGE_SERVER__PORT=8080``.

A key's variable is ``EDGE_`` and its path upper-cased, sections joined by a
double underscore (``auth.rate_limit.failures`` is ``EDGE_AUTH__RATE_LIMIT__FAILURES``),
the convention of ``pydantic-settings``, which splits and decodes them. Lists,
and lists of sections such as ``upstreams``, are one variable holding JSON for the
whole list: an entry of a list has no key of its own to name. ``null`` unsets a
key whose value may be none (``EDGE_METRICS__PORT=null``).

Only the variables of :func:`environment_keys` are read, and a variable that
looks like one (``EDGE_`` and a ``__``) but names no key is an error, so a typo
is never silently ignored, exactly as an unknown key in the file is not.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsError

from edge.config.models import Settings

ENV_PREFIX = "EDGE_"
ENV_NESTED_DELIMITER = "__"
# ``null`` is JSON's none, and what ``edge config show`` prints for an unset key.
ENV_NONE = "null"

Path_ = tuple[str, ...]


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The settings section an annotation is (``ServerSettings``), or None for a leaf."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _leaves(model: type[BaseModel], prefix: Path_ = ()) -> dict[Path_, FieldInfo]:
    found: dict[Path_, FieldInfo] = {}
    for name, field in model.model_fields.items():
        if field.exclude:
            continue  # not a key: ``source`` is where the settings were read from
        path = (*prefix, name)
        section = _section_of(field.annotation)
        if section is None:
            found[path] = field
        else:
            found.update(_leaves(section, path))
    return found


def variable_name(path: Path_) -> str:
    """``("server", "port")`` -> ``EDGE_SERVER__PORT``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(part.upper() for part in path)


def environment_keys() -> dict[str, str]:
    """Every variable and the key it sets (``EDGE_SERVER__PORT`` -> ``server.port``)."""
    return {variable_name(path): ".".join(path) for path in _leaves(Settings)}


_FIELDS = _leaves(Settings)
_VARIABLES = {variable_name(path): path for path in _FIELDS}


def _is_text(annotation: Any) -> bool:
    """Whether a leaf takes text as it is (a string or a path), so its value is not decoded."""
    if annotation in (str, Path):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_text(arg) for arg in typing.get_args(annotation))
    return False


def _is_json(annotation: Any) -> bool:
    """Whether a leaf is a list (of strings or of sections), given as one JSON value."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_json(arg) for arg in typing.get_args(annotation))
    return origin in (list, dict)


class _GivenEnvironment(EnvSettingsSource):
    """``pydantic-settings``' environment source over a given mapping instead of ``os.environ``.

    The loader takes its environment as an argument (``load_settings(environ=...)``)
    so that the CLI, the workers and the tests all decide from the same mapping.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = {name.lower(): value for name, value in environ.items()}
        super().__init__(
            cast(type[BaseSettings], Settings),
            case_sensitive=False,
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_NESTED_DELIMITER,
            env_parse_none_str=ENV_NONE,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def read_environment(
    environ: Mapping[str, str], problems: list[str]
) -> tuple[dict[str, Any], dict[Path_, str]]:
    """The keys the environment sets, nested as in the file, and which variable set each.

    A fault (a variable that names no key, a list that is not JSON) is appended
    to ``problems`` as one line naming the variable; its value is never quoted,
    since it may be a secret.
    """
    chosen: dict[str, str] = {}
    for name, value in environ.items():
        # Names are matched exactly, as EDGE_GATEWAY_TOKEN is: edge_server__port is not one.
        if name in _VARIABLES:
            path = _VARIABLES[name]
            field = _FIELDS[path]
            if _is_json(field.annotation) and value != ENV_NONE:
                try:
                    json.loads(value)
                except json.JSONDecodeError as exc:
                    problems.append(
                        f"{name}: is not JSON ({exc.msg} at character {exc.pos}); "
                        f"give the whole list, like {name}='[\"...\"]'"
                    )
                    continue
            chosen[name] = value
        elif name.startswith(ENV_PREFIX) and ENV_NESTED_DELIMITER in name[len(ENV_PREFIX) :]:
            problems.append(
                f"{name}: names no configuration key (every variable is listed in "
                "docs/configuration.md; an entry of a list is set with the whole list as JSON)"
            )
    if not chosen:
        return {}, {}
    try:
        data = _GivenEnvironment(chosen)()
    except SettingsError as exc:
        problems.append(f"environment: {exc}")
        return {}, {}
    for name in chosen:
        _decode_leaf(data, _VARIABLES[name], _FIELDS[_VARIABLES[name]])
    return data, {_VARIABLES[name]: name for name in chosen}


def _decode_leaf(data: dict[str, Any], path: Path_, field: FieldInfo) -> None:
    """A number or a boolean given as text becomes one, for the validators that want the type."""
    node: Any = data
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return
    value = node.get(path[-1])
    if isinstance(value, str) and not _is_text(field.annotation):
        try:
            decoded = json.loads(value)
        except ValueError:
            return  # left as given: the field's own validator says what is wrong with it
        if not isinstance(decoded, str):
            node[path[-1]] = decoded


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: sections merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = merge(below, value)
        else:
            merged[key] = value
    return merged


__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_NONE",
    "ENV_PREFIX",
    "environment_keys",
    "merge",
    "read_environment",
    "variable_name",
]

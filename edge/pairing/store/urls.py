"""The one reader of ``store.url``: which backend it names, and that backend's settings.

``None`` is the default SQLite file in ``data_dir``; ``sqlite:///abs/path`` an
absolute file; ``sqlite:name`` a file relative to ``data_dir``; ``redis://``,
``rediss://`` and ``unix://`` the Redis store. Nothing here opens anything or
needs the ``redis`` package, so the configuration and the CLI check URLs with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from edge.pairing.store.base import DEFAULT_SQLITE_NAME, StoreError

SCHEMES = {"sqlite": "sqlite", "redis": "redis", "rediss": "redis", "unix": "redis"}
DEFAULT_PREFIX = "edge"
DEFAULT_SOCKET_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 1.0  # a down Redis must not hold a request for long
DEFAULT_RETRIES = 2  # per command, 50-500 ms apart: rides out a restart's first refusals
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FLOAT_OPTIONS = {"socket_timeout", "socket_connect_timeout"}
_INT_OPTIONS = {"health_check_interval": 0, "max_connections": 1, "retries": 0}
_TLS_FILES = {"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
_TLS_OPTIONS = _TLS_FILES | {"ssl_ca_path", "ssl_cert_reqs", "ssl_check_hostname"}
_KNOWN_OPTIONS = (
    {"db", "prefix", "password", "username", "client_name"}
    | _FLOAT_OPTIONS
    | set(_INT_OPTIONS)
    | _TLS_OPTIONS
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class RedisTarget:
    """What a ``redis://``, ``rediss://`` or ``unix://`` store URL asks for, checked."""

    display: str  # the URL without password or query, for messages
    prefix: str
    connection: Mapping[str, Any] = field(repr=False)  # keyword arguments of redis.Redis
    retries: int = DEFAULT_RETRIES


def parse_redis_url(url: str) -> RedisTarget:
    """Check ``store.url`` for the Redis store; StoreError names the problem, never the password.

    ``redis://[user:password@]host[:port][/db][?options]``, ``rediss://`` for
    TLS, ``unix:///path/to/redis.sock[?db=N]``. Options: ``prefix`` (key
    prefix, default ``edge``), ``password``, ``username``, ``db``,
    ``socket_timeout``, ``socket_connect_timeout``, ``retries``,
    ``health_check_interval``, ``max_connections``, ``client_name`` and, for
    ``rediss://``, ``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs`` (none, optional, required) and
    ``ssl_check_hostname``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
    except ValueError as exc:
        raise StoreError(f"store.url: not a valid Redis URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"redis", "rediss", "unix"}:
        raise StoreError(f"store.url: {scheme!r} is not a Redis scheme (redis, rediss or unix)")
    host = parts.hostname or ""
    if scheme == "unix":
        if host or port is not None:
            raise StoreError(
                "store.url: a unix:// URL names a socket file, not a host: "
                "unix:///run/redis/redis.sock?db=0"
            )
        if not parts.path or parts.path == "/":
            raise StoreError("store.url: the unix:// URL names no socket file")
        display = f"unix://{parts.path}"
    else:
        display = f"{scheme}://{_host_for_display(host or 'localhost')}:{port or 6379}"
    options = _query_options(parts.query)
    if "password" in options and password is not None:
        raise StoreError("store.url: the password is given twice (in the URL and in ?password=)")
    if "username" in options and username is not None:
        raise StoreError("store.url: the user name is given twice (in the URL and in ?username=)")
    db = _db_number(parts.path if scheme != "unix" else "", options.pop("db", None))
    display += f"/{db}"
    prefix = options.pop("prefix", DEFAULT_PREFIX)
    if not _PREFIX_RE.fullmatch(prefix):
        raise StoreError(
            f"store.url: prefix {prefix!r} must be 1-64 letters, digits, '_', '.' or '-'"
        )
    if prefix != DEFAULT_PREFIX:
        display += f" (key prefix {prefix!r})"
    connection: dict[str, Any] = {
        "db": db,
        "username": options.pop("username", username),
        "password": options.pop("password", password),
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_CONNECT_TIMEOUT,
        "decode_responses": True,
    }
    if scheme == "unix":
        connection["unix_socket_path"] = parts.path
    else:
        connection["host"] = host or "localhost"
        connection["port"] = port or 6379
    for name in _FLOAT_OPTIONS & options.keys():
        connection[name] = _seconds(name, options.pop(name))
    retries = DEFAULT_RETRIES
    for name, minimum in _INT_OPTIONS.items():
        if name in options:
            value = _integer(name, options.pop(name), minimum)
            if name == "retries":
                retries = value
            else:
                connection[name] = value
    if "client_name" in options:
        connection["client_name"] = options.pop("client_name")
    tls = {name: options.pop(name) for name in _TLS_OPTIONS & options.keys()}
    if tls and scheme != "rediss":
        raise StoreError(
            f"store.url: {sorted(tls)[0]} needs TLS; use rediss:// instead of {scheme}://"
        )
    if scheme == "rediss":
        connection.update(_tls_options(tls))
    return RedisTarget(display=display, prefix=prefix, connection=connection, retries=retries)


def _host_for_display(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _query_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise StoreError("store.url: the query after '?' is not name=value pairs") from None
    for name, value in pairs:
        if name not in _KNOWN_OPTIONS:
            known = ", ".join(sorted(_KNOWN_OPTIONS))
            raise StoreError(f"store.url: unknown option {name!r} (known: {known})")
        if name in options:
            raise StoreError(f"store.url: option {name!r} is given twice")
        if not value:
            raise StoreError(f"store.url: option {name!r} has no value")
        options[name] = value
    return options


def _db_number(path: str, query_db: str | None) -> int:
    from_path = unquote(path).strip("/")
    if from_path and query_db is not None:
        raise StoreError("store.url: the database number is given twice (path and ?db=)")
    text = query_db if query_db is not None else (from_path or "0")
    if not text.isdigit() or len(text) > 5:
        raise StoreError(f"store.url: database {text!r} must be a number such as /0")
    return int(text)


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise StoreError(f"store.url: {name} must be a number of seconds above 0, not {text!r}")
    return value


def _integer(name: str, text: str, minimum: int) -> int:
    if not text.isdigit() or int(text) < minimum or len(text) > 9:
        raise StoreError(f"store.url: {name} must be a whole number of at least {minimum}")
    return int(text)


def _tls_options(tls: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"ssl": True}
    for name in _TLS_FILES & tls.keys():
        if not Path(tls[name]).is_file():
            raise StoreError(f"store.url: {name} {tls[name]!r} is not a readable file")
        options[name] = tls[name]
    if "ssl_ca_path" in tls:
        if not Path(tls["ssl_ca_path"]).is_dir():
            raise StoreError(f"store.url: ssl_ca_path {tls['ssl_ca_path']!r} is not a directory")
        options["ssl_ca_path"] = tls["ssl_ca_path"]
    if "ssl_cert_reqs" in tls:
        if tls["ssl_cert_reqs"] not in {"none", "optional", "required"}:
            raise StoreError("store.url: ssl_cert_reqs must be none, optional or required")
        options["ssl_cert_reqs"] = tls["ssl_cert_reqs"]
    if "ssl_check_hostname" in tls:
        flag = tls["ssl_check_hostname"].lower()
        if flag not in _TRUE | _FALSE:
            raise StoreError("store.url: ssl_check_hostname must be true or false")
        options["ssl_check_hostname"] = flag in _TRUE
    if options.get("ssl_cert_reqs") == "none":  # nothing is verified, so neither is the name
        if options.get("ssl_check_hostname"):
            raise StoreError(
                "store.url: ssl_check_hostname=true needs the certificate checked "
                "(ssl_cert_reqs=required)"
            )
        options["ssl_check_hostname"] = False
    return options


def backend_of(url: str | None) -> str | None:
    """``"sqlite"`` or ``"redis"``: the backend ``url`` names (None: it names none)."""
    if url is None:
        return "sqlite"
    if not isinstance(url, str) or ":" not in url:
        return None
    return SCHEMES.get(url.split(":", 1)[0].lower())


def sqlite_path_of(url: str | None, data_dir: Path) -> Path | None:
    """The file a SQLite ``store.url`` names (the default in ``data_dir`` for None); None else."""
    if url is None:
        return data_dir / DEFAULT_SQLITE_NAME
    if not isinstance(url, str) or not url.lower().startswith("sqlite:"):
        return None
    try:
        return sqlite_file(url, data_dir)
    except StoreError:
        return None


def redact_url(url: str) -> str:
    """``url`` with any password (user part or ``?password=``) as ``***``, for output and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "password=" not in parts.query:
            return url
        if parts.password is not None:
            netloc = parts.netloc.rsplit("@", 1)[1]
            user = parts.username or ""
            parts = parts._replace(netloc=f"{user}:***@{netloc}")
        if "password=" in parts.query:
            query = "&".join(
                "password=***" if pair.startswith("password=") else pair
                for pair in parts.query.split("&")
            )
            parts = parts._replace(query=query)
        return urlunsplit(parts)
    except ValueError:
        return "<unparseable url>"


def sqlite_file(url: str, data_dir: Path) -> Path:
    """The file a ``sqlite:`` URL names; StoreError when it names none."""
    rest = url[len("sqlite:") :]
    if rest.startswith("///"):
        path = Path("/" + rest[3:].lstrip("/"))
        if path == Path("/"):
            raise StoreError(f"store.url: {url!r} names no file; use sqlite:///path/to/file")
        return path
    if rest.startswith("//"):
        raise StoreError(
            f"store.url: {url!r} has a host part; SQLite files are local: use "
            "sqlite:///absolute/path or sqlite:relative/path"
        )
    if not rest or "\x00" in rest:
        raise StoreError(f"store.url: {url!r} names no file; use sqlite:///path/to/file")
    return data_dir / rest


def with_password(url: str, password: str) -> str:
    """A Redis ``url`` with ``password`` as the password of its user part."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def has_password(url: str) -> bool:
    """Whether ``url`` has a password (user part or ``?password=``); ValueError if unreadable."""
    parts = urlsplit(url)
    return parts.password is not None or "password=" in parts.query

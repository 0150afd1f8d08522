"""Where a browser goes once it is paired: the ``rd`` target it came with, and the apps.

A refused browser is sent to the dashboard with the address it wanted in
``?rd=`` (the parameter oauth2-proxy and Authelia use), so that pairing ends
where the visitor was going rather than on a "Connected" page. That address
comes from the visitor's URL bar, so it is an open-redirect vector unless it
is checked: ``return_target`` admits only a path on the gateway's own origin
or an address on the origin of a configured upstream host (same scheme and
port as the gateway was reached on), and hands back an absolute URL it built
itself from the parts it checked, never the text it was given.

Refused: any other host or port, a scheme other than http(s) (``javascript:``,
``data:``), protocol-relative ``//host`` and ``/\\host`` (browsers read a
backslash as a slash), user info (``https://edge@evil.com``), whitespace and
control characters (which browsers strip, joining ``java\\tscript:``), and
their percent-encoded forms in the path (``/%2F%2Fevil.com``, ``/%5Cevil``),
which an app that decodes before redirecting would turn back into the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from edge.config import Settings
from edge.net.origin import normalise_origin

RETURN_PARAM = "rd"
# The dashboard page keeps the ``rd`` it was opened with in this cookie for
# ``GET /api/apps`` to check, so the page's script never reads its own query
# string (no parameter of the address bar steers the Control UI).
RETURN_COOKIE = "edge_return"
RETURN_COOKIE_PATH = "/api/apps"
RETURN_COOKIE_MAX_AGE = 900  # pairing takes minutes: an approval, not a day
MAX_TARGET_CHARS = 2048
# Printable ASCII without space: what a browser sends as a request target, percent-encoded.
_TARGET_CHARS = re.compile(r"[\x21-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class App:
    """One configured upstream as the dashboard links to it."""

    name: str
    url: str


def _path_safe(path: str) -> bool:
    """A path-and-query that stays on the origin it is appended to, however often it is decoded.

    Checked as given and after each round of percent-decoding (an app behind
    may decode before it redirects), until decoding changes nothing.
    """
    if not path.startswith("/"):
        return False
    for _ in range(4):
        if path[:2] in ("//", "/\\") or "\\" in path:
            return False
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
            return False
        decoded = unquote(path)
        if decoded == path:
            return True
        path = decoded
    return False  # still encoded after four rounds: nobody needs that


def allowed_origins(settings: Settings, own: str) -> frozenset[str]:
    """The origins a return target may name: the gateway's own and each upstream host's.

    An upstream host is reached through the same proxy as the dashboard, so
    its origin has the scheme and port of ``own``; another port is another
    server, whatever its host.
    """
    origins = {own}
    for upstream in settings.upstreams:
        if upstream.host is not None:
            sibling = _sibling_origin(own, upstream.host)
            if sibling is not None:
                origins.add(sibling)
    return frozenset(origins)


def _sibling_origin(own: str, host: str) -> str | None:
    """``host`` on the scheme and port of ``own`` (a normalised origin)."""
    scheme, _, authority = own.partition("://")
    port = authority.rpartition(":")[2] if authority.rfind(":") > authority.rfind("]") else ""
    return normalise_origin(f"{scheme}://{host}" + (f":{port}" if port else ""))


def return_target(text: object, *, own: str | None, allowed: frozenset[str]) -> str | None:
    """The absolute URL to send a paired browser to for ``rd=text``, or None to stay.

    ``own`` is the origin the browser reached the gateway on; ``allowed`` the
    origins it may be sent to (``allowed_origins``). The answer is rebuilt
    from the checked origin and path, so nothing the parser skipped survives.
    """
    if own is None or not isinstance(text, str) or not 0 < len(text) <= MAX_TARGET_CHARS:
        return None
    if not _TARGET_CHARS.fullmatch(text):
        return None
    if text.startswith("/"):
        return own + text if _path_safe(text) else None
    scheme, separator, rest = text.partition("://")
    if not separator or scheme.lower() not in _DEFAULT_PORTS:
        return None
    slash = rest.find("/")
    authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    if not authority or any(char in authority for char in "@\\?#%"):
        return None
    origin = normalise_origin(f"{scheme.lower()}://{authority}")
    if origin is None or origin not in allowed or not _path_safe(path):
        return None
    return origin + path


def relative_target(original_uri: str | None) -> str | None:
    """The ``rd`` value for a request line's target, or None when there is nothing to keep.

    What a proxy passes as the original URI (nginx ``$request_uri``, Caddy's
    ``X-Forwarded-Uri``) is a path on the origin the visitor reached; ``/``
    needs no return.
    """
    if original_uri is None or original_uri == "/" or not _TARGET_CHARS.fullmatch(original_uri):
        return None
    if len(original_uri) > MAX_TARGET_CHARS or not _path_safe(original_uri):
        return None
    return original_uri


def sign_in_url(own: str | None, original_uri: str | None) -> str:
    """The dashboard's address for a refused browser, carrying where it was going."""
    base = f"{own}/" if own else "/"
    target = relative_target(original_uri)
    if target is None:
        return base
    return f"{base}?{RETURN_PARAM}={quote(target, safe='')}"


def return_cookie(value: str | None, *, secure: bool) -> bytes:
    """A ``Set-Cookie`` value that keeps ``value`` for ``/api/apps`` (None: clears it).

    HttpOnly and scoped to ``/api/apps``, so neither page script nor an app
    behind the gateway ever sees it; what it holds is checked where it is
    used, never where it is set.
    """
    kept = quote(value, safe="") if value is not None else ""
    age = RETURN_COOKIE_MAX_AGE if value is not None else 0
    flags = "; Secure" if secure else ""
    return (
        f"{RETURN_COOKIE}={kept}; Max-Age={age}; Path={RETURN_COOKIE_PATH}; HttpOnly; "
        f"SameSite=Strict{flags}"
    ).encode("ascii")


def kept_target(cookies: dict[str, str]) -> str | None:
    """The target ``return_cookie`` kept, as it was given (None: no cookie)."""
    kept = cookies.get(RETURN_COOKIE)
    return None if kept is None else unquote(kept)


def configured_apps(settings: Settings, own: str | None) -> list[App]:
    """Each upstream as a link: its host's origin, or its prefix on the gateway's origin."""
    if own is None:
        return []
    apps = []
    for upstream in settings.upstreams:
        if upstream.host is not None:
            origin = _sibling_origin(own, upstream.host)
            if origin is None:
                continue
            url = origin + "/"
        else:
            url = own + upstream.path_prefix
        apps.append(App(name=upstream.name or upstream.label, url=url))
    return apps

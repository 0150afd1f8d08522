"""The pure forwarding policy: header names in every spelling, cookies, paths, bounded JSON."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.gateway import bounded_json
from edge.gateway.forwarding.headers import (
    canonical,
    cookie_parts,
    is_reserved,
    request_headers,
    response_headers,
    session_cookie,
    without_edge_cookies,
)
from edge.gateway.forwarding.paths import PathRefused, normalise, remove_dot_segments

EDGE_FORWARDING = [(b"x-forwarded-for", b"198.51.100.23"), (b"x-forwarded-proto", b"https")]
EDGE_IDENTITY = [(b"remote-user", b"device-id"), (b"x-edge-role", b"user")]
EDGE_SET = {name for name, _ in EDGE_FORWARDING + EDGE_IDENTITY}

FAMILIES = [
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Real-IP",
    "Remote-User",
    "Remote-Email",
    "Remote-Name",
    "Remote-Groups",
    "X-Edge-Role",
    "X-Edge-Auth",
    "X-Edge-Device-Id",
    "X-Auth-Request-Email",
    "X-Auth-Request-User",
    "X-Remote-User",
    "X-WEBAUTH-USER",
]


def spellings(name: str) -> list[str]:
    dashed = name.split("-")
    return [
        name,
        name.lower(),
        name.upper(),
        "_".join(dashed),
        "_".join(dashed).upper(),
        "_".join(part.lower() for part in dashed),
        "-".join(dashed[:1]) + ("_" + "-".join(dashed[1:]) if len(dashed) > 1 else ""),
    ]


def policy(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return request_headers(
        headers, forwarding=EDGE_FORWARDING, identity=EDGE_IDENTITY, drop_authorization=True
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_every_spelling_of_a_forwarding_or_identity_header_is_dropped(family: str) -> None:
    for spelling in spellings(family):
        sent = [(spelling.encode(), b"forged"), (b"accept", b"*/*")]
        out = policy(sent)
        assert (spelling.encode(), b"forged") not in out, spelling
        assert b"forged" not in [value for _, value in out], spelling
        assert (b"accept", b"*/*") in out


def test_canonical_name_reads_underscore_as_dash() -> None:
    assert canonical(b"REMOTE_USER") == b"remote-user"
    assert is_reserved(b"Remote_Email")
    assert is_reserved(b"X_Edge_Role")
    assert not is_reserved(b"X-Request-Id")


def test_headers_named_in_connection_are_dropped_in_either_spelling() -> None:
    sent = [(b"connection", b"keep-alive, X_Secret"), (b"x-secret", b"1"), (b"x_secret", b"2")]
    assert policy(sent) == [*EDGE_FORWARDING, *EDGE_IDENTITY]


def test_comma_joined_session_cookie_authenticates_only_as_it_is_stripped() -> None:
    headers = [(b"cookie", b"theme=dark, edge_session=tok123")]
    assert session_cookie(headers) == "tok123"
    assert [(n, v) for n, v in policy(headers) if n == b"cookie"] == []


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"theme=dark; edge_session=t; lang=en", b"theme=dark; lang=en"),
        (b"edge_session=t", b""),
        (b'__Host-edge_session="t"; a=b', b"a=b"),
        (b"__Secure-edge_session=t;a=b", b"a=b"),
        (b"a=1,2; b=3", b"a=1,2; b=3"),  # a non-conforming value with a comma is left alone
        (b"theme=dark, edge_session=t; lang=en", b"lang=en"),
        (b"edge_session=a; edge_session=b", b""),
    ],
)
def test_edge_cookies_are_stripped_whatever_the_separator(header: bytes, kept: bytes) -> None:
    assert without_edge_cookies(header) == kept


def test_a_cookie_that_is_not_edges_does_not_authenticate() -> None:
    assert session_cookie([(b"cookie", b"xedge_session=t; EDGE_SESSION=u")]) is None
    assert [c for _, cs in cookie_parts(b"edge_session") for c in cs] == [(b"", b"edge_session")]


def test_upstream_on_the_control_origin_cannot_set_edges_cookie_and_is_sandboxed() -> None:
    upstream = [
        (b"Set-Cookie", b"edge_session=stolen; Path=/"),
        (b"Set-Cookie", b"__Host-edge_session=; Max-Age=0"),
        (b"Set-Cookie", b"app=1"),
    ]
    shared = response_headers(upstream, on_control_origin=True, sandbox=True)
    assert shared == [(b"set-cookie", b"app=1"), (b"content-security-policy", b"sandbox")]
    trusted = response_headers(upstream, on_control_origin=True, sandbox=False)
    assert trusted == [(b"set-cookie", b"app=1")]
    # On a host of its own too: with Domain= it could toss a session onto the dashboard's host.
    own_host = response_headers(upstream, on_control_origin=False, sandbox=True)
    assert own_host == [(b"set-cookie", b"app=1")]


# -- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected", "climbed"),
    [
        (b"/svc/x/../../admin/", b"/admin/", False),
        (b"/svc/%2e%2e/admin", b"/admin", False),
        (b"/svc/%2E%2e/%2e/a", b"/a", False),
        (b"/svc/a/./b/.", b"/svc/a/b/", False),
        (b"/../etc", b"/etc", True),
        (b"/svc/a/..", b"/svc/", False),
        (b"/svc/%252e%252e/a", b"/svc/%252e%252e/a", False),  # double-encoded: not a dot
    ],
)
def test_dot_segments_are_removed_after_decoding_dots(
    raw: bytes, expected: bytes, climbed: bool
) -> None:
    normal = normalise(raw)
    assert (normal.raw, normal.climbed) == (expected, climbed)


@pytest.mark.parametrize("raw", [b"/svc/..%2fadmin", b"/svc/a%2Fb", b"/svc/a\\b", b"/svc/%5c..%5cx"])
def test_encoded_slashes_and_backslashes_are_refused(raw: bytes) -> None:
    with pytest.raises(PathRefused, match="encoded '/'"):
        normalise(raw)


SEGMENT = st.sampled_from(["a", "b", "svc", ".", "..", "%2e", "%2E%2e", ".%2e", "", "x y", "%41"])


@settings(max_examples=400)
@given(st.lists(SEGMENT, max_size=12))
def test_a_normalised_path_has_no_dot_segments_and_stays_under_root(segments: list[str]) -> None:
    raw = ("/" + "/".join(segments)).encode()
    normal = normalise(raw)
    parts = normal.raw.split(b"/")
    assert normal.raw.startswith(b"/")
    assert b".." not in parts and b"." not in parts
    assert normal.path == normal.path.replace("/../", "/")
    assert remove_dot_segments(normal.raw)[0] == normal.raw  # idempotent


# -- property: what the upstream receives ---------------------------------------------------

RESERVED_NAMES = st.sampled_from(FAMILIES).flatmap(lambda f: st.sampled_from(spellings(f)))
OTHER_NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True)
VALUES = st.from_regex(r"[ -~]{0,30}", fullmatch=True)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(st.one_of(RESERVED_NAMES, OTHER_NAMES), VALUES),
        max_size=20,
    )
)
def test_no_client_forwarding_or_identity_header_survives_the_policy(
    headers: list[tuple[str, str]],
) -> None:
    sent = [(name.encode(), value.encode()) for name, value in headers]
    out = policy(sent)
    client_part = out[: len(out) - len(EDGE_FORWARDING) - len(EDGE_IDENTITY)]
    assert out[len(client_part) :] == [*EDGE_FORWARDING, *EDGE_IDENTITY]
    for name, _ in client_part:
        assert not is_reserved(name), name
        assert canonical(name) not in EDGE_SET
        assert name.lower() not in (b"host", b"authorization")


# -- bounded JSON ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000, "deeper than 32"),
        ('{"a":' * 40 + "1" + "}" * 40, "deeper than 32"),
        ("[" * 33 + "]" * 33, "deeper than 32"),
        ("{'a': 1}", "not valid JSON"),
        ("x" * (64 * 1024 + 1), "over 64 KiB"),
    ],
)
def test_client_json_too_deep_too_large_or_invalid_is_refused_with_a_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(bounded_json.JSONRefused, match=reason):
        bounded_json.loads(text, max_bytes=64 * 1024 if len(text) < 70_000 else 10**6)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"note": "[" * 100 + '\\"{{{'})
    assert bounded_json.loads(text) == json.loads(text)
    assert bounded_json.loads("[" * 32 + "]" * 32) is not None

"""X-Forwarded-For and Forwarded parsing, and proof that cost stays bounded by the walk limit.

The cost tests count calls instead of timing anything: a header of a megabyte
must lead to no more parsing work in Python than the rightmost entries need.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest

import edge.net.forwarded as forwarded_module
from edge.net import NetworkSet, ResolverPolicy, parse_forwarded, resolve, split_x_forwarded_for
from edge.net.forwarded import MAX_ELEMENT_LENGTH, parse_forwarded_element

# ``edge.net.resolve`` the attribute is the function; the module is reached by name.
resolve_module = importlib.import_module("edge.net.resolve")
MEGABYTE = 1_000_000
LIMIT = 64


@pytest.mark.parametrize(
    ("lines", "limit", "expected"),
    [
        pytest.param(["a, b, c"], 64, (["a", "b", "c"], False), id="in_order"),
        pytest.param(["a, b", "c"], 64, (["a", "b", "c"], False), id="lines_joined_in_order"),
        pytest.param(
            [",a,, ,b,", " ", "", "c,"], 64, (["a", "b", "c"], False), id="empties_dropped"
        ),
        pytest.param(["a, b, c"], 2, (["b", "c"], True), id="rightmost_within_limit"),
        pytest.param(["a", "b, c"], 2, (["b", "c"], True), id="limit_across_lines"),
        pytest.param(["a, b"], 2, (["a", "b"], False), id="exactly_the_limit_is_not_more"),
        pytest.param(["", " , "], 64, ([], False), id="nothing_but_separators"),
        pytest.param([], 64, ([], False), id="no_lines"),
        pytest.param([" \t1.2.3.4\t "], 64, (["1.2.3.4"], False), id="whitespace_stripped"),
    ],
)
def test_split_x_forwarded_for(lines: list[str], limit: int, expected: Any) -> None:
    assert split_x_forwarded_for(lines, limit) == expected


def test_long_and_short_lines_split_alike() -> None:
    entries = [f"10.0.{i // 250}.{i % 250}" for i in range(100)]
    long_line = " ,, ".join(entries) + " , " + " " * 300
    assert len(long_line) > 256
    short_lines = [", ".join(entries[i : i + 5]) for i in range(0, 100, 5)]
    assert split_x_forwarded_for([long_line], 64) == split_x_forwarded_for(short_lines, 64)
    assert split_x_forwarded_for([long_line], 64) == (entries[-64:], True)


@pytest.mark.parametrize(
    ("text", "for_", "proto", "host", "by"),
    [
        pytest.param(
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            "192.0.2.60",
            "http",
            None,
            "203.0.113.43",
            id="rfc7239_for_proto_by",
        ),
        pytest.param(
            'For="[2001:db8:cafe::17]:4711"',
            "[2001:db8:cafe::17]:4711",
            None,
            None,
            None,
            id="rfc7239_quoted_ipv6_case_insensitive_name",
        ),
        pytest.param('for="_gazonk"', "_gazonk", None, None, None, id="rfc7239_obfuscated"),
        pytest.param("for=unknown", "unknown", None, None, None, id="unknown"),
        pytest.param(
            'host="edge.example.com:8443";for=1.2.3.4',
            "1.2.3.4",
            None,
            "edge.example.com:8443",
            None,
            id="quoted_host_with_port",
        ),
        pytest.param(
            " ; for = 1.2.3.4 ;; proto=https ; ",
            "1.2.3.4",
            "https",
            None,
            None,
            id="empty_pairs_and_spaces",
        ),
        pytest.param(
            'for=1.2.3.4;secret="a;b,c"',
            "1.2.3.4",
            None,
            None,
            None,
            id="extension_with_separators_in_quotes",
        ),
        pytest.param('for="\\1.2.3.4"', "1.2.3.4", None, None, None, id="quoted_pair_unescaped"),
    ],
)
def test_valid_forwarded_elements(
    text: str, for_: str | None, proto: str | None, host: str | None, by: str | None
) -> None:
    element = parse_forwarded_element(text)
    assert element.valid
    assert (element.for_, element.proto, element.host, element.by) == (for_, proto, host, by)
    assert element.raw == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("for=[2001:db8::1]", id="unquoted_brackets"),
        pytest.param("for=1.2.3.4:80", id="unquoted_port"),
        pytest.param("for=1.2.3.4;for=5.6.7.8", id="repeated_parameter"),
        pytest.param("For=1.2.3.4;fOR=5.6.7.8", id="repeated_parameter_any_case"),
        pytest.param('for="1.2.3.4', id="unclosed_quote"),
        pytest.param('for="a"b"', id="text_after_closing_quote"),
        pytest.param('for="a""b"', id="bare_quote_inside"),
        pytest.param("for=", id="empty_value"),
        pytest.param("=1.2.3.4", id="empty_name"),
        pytest.param("for", id="no_equals"),
        pytest.param("f or=1.2.3.4", id="space_in_name"),
        pytest.param(";;", id="only_empty_pairs"),
        pytest.param("", id="empty"),
        pytest.param("for=" + "1" * MAX_ELEMENT_LENGTH, id="longer_than_any_real_element"),
    ],
)
def test_invalid_forwarded_elements(text: str) -> None:
    element = parse_forwarded_element(text)
    assert not element.valid
    assert element.for_ is None


def test_forwarded_elements_split_on_commas_outside_quotes_only() -> None:
    elements, more = parse_forwarded(
        ['for=1.1.1.1;ext="a, b", for="[2001:db8::1]:80"', "for=2.2.2.2, ,"], 64
    )
    assert more is False
    assert [e.for_ for e in elements] == ["1.1.1.1", "[2001:db8::1]:80", "2.2.2.2"]
    assert all(e.valid for e in elements)


def test_forwarded_limit_keeps_the_rightmost_elements() -> None:
    elements, more = parse_forwarded(["for=1.1.1.1, for=2.2.2.2", "for=3.3.3.3"], 2)
    assert more is True
    assert [e.for_ for e in elements] == ["2.2.2.2", "3.3.3.3"]


def test_an_unbalanced_quote_swallows_only_what_is_left_of_it() -> None:
    elements, _ = parse_forwarded(['for=1.1.1.1, for="x, for=2.2.2.2'], 64)
    assert [e.valid for e in elements] == [False, True]
    assert elements[1].for_ == "2.2.2.2"


# --- cost: a megabyte of header costs what its rightmost entries cost


class CountingPattern:
    """Stands in for a compiled pattern and counts ``match`` calls."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.calls = 0

    def match(self, text: str, position: int = 0) -> re.Match[str] | None:
        self.calls += 1
        return self.pattern.match(text, position)


def count_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    calls = [0]
    original = getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def stuffed_x_forwarded_for() -> str:
    header = ", ".join(f"198.51.{i // 250 % 250}.{i % 250}" for i in range(MEGABYTE // 14))
    assert len(header) >= MEGABYTE
    return header


def test_megabyte_x_forwarded_for_yields_exactly_the_limit_and_says_there_was_more() -> None:
    header = stuffed_x_forwarded_for()
    entries, more = split_x_forwarded_for([header], LIMIT)
    assert more is True
    assert len(entries) == LIMIT
    assert entries == [e.strip() for e in header.split(",")][-LIMIT:]


def test_megabyte_x_forwarded_for_costs_one_match_per_entry_walked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counting = CountingPattern(forwarded_module._XFF_ENTRY_REVERSED)
    monkeypatch.setattr(forwarded_module, "_XFF_ENTRY_REVERSED", counting)
    split_x_forwarded_for([stuffed_x_forwarded_for()], LIMIT)
    assert counting.calls == LIMIT + 1


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("," * MEGABYTE, id="a_megabyte_of_commas"),
        pytest.param(", " * (MEGABYTE // 2) + "203.0.113.7", id="empties_then_one_entry"),
        pytest.param("x" * MEGABYTE, id="one_megabyte_entry"),
        pytest.param(" \t" * (MEGABYTE // 2), id="a_megabyte_of_whitespace"),
    ],
)
def test_pathological_x_forwarded_for_costs_a_constant_number_of_matches(
    monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    counting = CountingPattern(forwarded_module._XFF_ENTRY_REVERSED)
    monkeypatch.setattr(forwarded_module, "_XFF_ENTRY_REVERSED", counting)
    entries, more = split_x_forwarded_for([header], LIMIT)
    assert counting.calls <= 2
    assert more is False
    assert len(entries) <= 1


def test_resolving_a_megabyte_chain_parses_at_most_the_limit_of_entries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = count_calls(monkeypatch, resolve_module, "endpoint_of")
    policy = ResolverPolicy(trusted_proxies=NetworkSet.parse(["10.0.0.0/8", "198.51.0.0/16"]))
    headers = [(b"x-forwarded-for", stuffed_x_forwarded_for().encode())]
    result = resolve(("10.0.0.2", 1), headers, policy)
    assert parsed[0] == LIMIT
    assert result.anomalies == ("too_many_hops",)
    assert len(result.hops) == 1 + LIMIT + 1  # the peer, the walked entries, "not walked"


def test_megabyte_forwarded_parses_only_the_rightmost_elements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    element_parses = count_calls(monkeypatch, forwarded_module, "parse_forwarded_element")
    counting = CountingPattern(forwarded_module._FORWARDED_ELEMENT_REVERSED)
    monkeypatch.setattr(forwarded_module, "_FORWARDED_ELEMENT_REVERSED", counting)
    header = ", ".join(f'for="198.51.{i // 250 % 250}.{i % 250}"' for i in range(MEGABYTE // 20))
    assert len(header) >= MEGABYTE
    elements, more = parse_forwarded([header], LIMIT)
    assert more is True
    assert len(elements) == LIMIT
    assert element_parses[0] == LIMIT
    assert counting.calls == LIMIT + 1


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("," * MEGABYTE, id="a_megabyte_of_commas"),
        pytest.param('for=1.2.3.4, "' + "x" * MEGABYTE, id="unbalanced_quote_then_a_megabyte"),
        pytest.param("for=" + "x" * MEGABYTE, id="one_megabyte_element"),
        pytest.param('for="' + "\\\\" * (MEGABYTE // 2) + '"', id="a_megabyte_of_escapes"),
    ],
)
def test_pathological_forwarded_costs_a_constant_amount_of_python_work(
    monkeypatch: pytest.MonkeyPatch, header: str
) -> None:
    splits = count_calls(monkeypatch, forwarded_module, "_split_pairs")
    counting = CountingPattern(forwarded_module._FORWARDED_ELEMENT_REVERSED)
    monkeypatch.setattr(forwarded_module, "_FORWARDED_ELEMENT_REVERSED", counting)
    elements, _ = parse_forwarded([header], LIMIT)
    assert counting.calls <= 3
    assert splits[0] <= 1  # at most the short valid element; the huge one is never split
    assert len(elements) <= 2
    assert all(len(e.raw) <= MAX_ELEMENT_LENGTH or not e.valid for e in elements)

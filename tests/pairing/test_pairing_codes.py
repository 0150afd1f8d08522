"""Request ids: short, typable, forgiving of look-alike characters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.pairing.codes import ALPHABET, new_request_id, normalize_request_id

ID_SHAPE = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}")


def test_new_ids_have_the_crockford_shape_and_differ() -> None:
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    assert all(ID_SHAPE.fullmatch(request_id) for request_id in ids)
    assert not set("ILOU") & set("".join(ids))


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("K7QF-2M9D", "K7QF-2M9D"),
        ("k7qf-2m9d", "K7QF-2M9D"),
        ("k7qf2m9d", "K7QF-2M9D"),
        ("  K7QF-2M9D \n", "K7QF-2M9D"),
        ("OOII-LLoo", "0011-1100"),
    ],
)
def test_typed_ids_are_normalised(typed: str, expected: str) -> None:
    assert normalize_request_id(typed) == expected


@pytest.mark.parametrize(
    "typed",
    ["", "K7QF-2M9", "K7QF-2M9DX", "K7Q-F2M9D", "K7QF--2M9D", "K7QU-2M9D", "K7QF 2M9D", "x" * 100],
)
def test_non_ids_are_refused(typed: str) -> None:
    assert normalize_request_id(typed) is None


def test_non_string_is_refused() -> None:
    assert normalize_request_id(12345678) is None  # type: ignore[arg-type]


@given(st.text(alphabet=ALPHABET, min_size=8, max_size=8))
def test_every_id_survives_lowercase_without_dash(chars: str) -> None:
    canonical = f"{chars[:4]}-{chars[4:]}"
    assert normalize_request_id(chars.lower()) == canonical


@given(st.text(max_size=40))
def test_normalisation_never_raises(text: str) -> None:
    result = normalize_request_id(text)
    assert result is None or ID_SHAPE.fullmatch(result)

"""The bounds on what a bad body may cost (infra/errors.py): validation errors
capped, lone surrogates found without encoding every body."""

import json

import pytest

from infra.errors import MAX_ERRORS_LISTED, _capped, _has_lone_surrogate


def test_errors_up_to_the_cap_are_listed_as_they_are():
    messages = {f"k{n}": ["Unknown field."] for n in range(MAX_ERRORS_LISTED)}
    assert _capped(messages) is messages
    assert _capped(["not a dict"]) == ["not a dict"]


def test_errors_past_the_cap_are_counted_not_listed():
    messages = {f"k{n}": ["Unknown field."] for n in range(MAX_ERRORS_LISTED + 5)}
    capped = _capped(messages)
    assert list(capped)[:MAX_ERRORS_LISTED] == list(messages)[:MAX_ERRORS_LISTED]
    assert capped["_more"] == ["5 more errors not listed."]
    assert len(capped) == MAX_ERRORS_LISTED + 1


@pytest.mark.parametrize("raw, lone", [
    (b'{"name": "plain"}', False),
    (b'{"name": "\\ud83d\\ude00 a pair is a character"}', False),
    (b'{"name": "lone \\ud800 half"}', True),
    (b'{"name": "lone \\uDFFF low half"}', True),
])
def test_a_lone_surrogate_is_found_and_a_pair_is_not(raw, lone):
    assert _has_lone_surrogate(raw, json.loads(raw)) is lone


def test_a_body_without_a_surrogate_escape_is_not_encoded():
    class Unencodable:  # json.dumps would fail on it: it must not be called
        pass

    assert _has_lone_surrogate(b'{"name": "x"}', {"name": Unencodable()}) is False

"""protocol/screen.py: one parser policy for every JSON body — NaN / Infinity, nesting past 64
levels, NUL and lone surrogates are a 400 naming the field; everything else passes through."""

from __future__ import annotations

import json

import pytest

from tokendock.errors import InvalidRequest
from tokendock.protocol.screen import MAX_DEPTH, screen


def refused(body: bytes | str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        screen(body.encode() if isinstance(body, str) else body)
    return err.value


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"temperature": NaN}', "temperature"),
        ('{"a": {"b": [1, Infinity]}}', "a.b[1]"),
        ('{"x": -Infinity}', "x"),
        ('{"tools": [{"parameters": {"minimum": 1e999}}]}', "tools[0].parameters.minimum"),
        ('{"seed": -1e400}', "seed"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(body: str, param: str) -> None:
    err = refused(body)
    assert err.status == 400 and err.param == param
    assert "NaN, Infinity" in err.message and f"'{param}'" in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"user": "a\\u0000b"}', "user"),
        ('{"metadata": {"user_id": "\\u0000"}}', "metadata.user_id"),
        ('{"messages": [{"content": "ok"}, {"content": "x\\u0000"}]}', "messages[1].content"),
        ('{"input": [{"content": [{"text": "\\u0000"}]}]}', "input[0].content[0].text"),
    ],
)
def test_nul_is_refused_naming_the_field(body: str, param: str) -> None:
    err = refused(body)
    assert err.param == param
    assert "NUL character" in err.message and f"'{param}'" in err.message


def test_a_nul_in_a_key_names_the_object() -> None:
    err = refused('{"metadata": {"k\\u0000": "v"}}')
    assert err.param == "metadata" and "keys must not contain a NUL" in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"user": "\\ud800"}', "user"),
        ('{"messages": [{"content": "a\\udfffb"}]}', "messages[0].content"),
        ('{"model": "\\ud83d"}', "model"),  # a high surrogate without its low half
    ],
)
def test_lone_surrogates_are_refused_naming_the_field(body: str, param: str) -> None:
    err = refused(body)
    assert err.param == param and "lone UTF-16 surrogate" in err.message


def nested(depth: int) -> bytes:
    """A body whose `x` makes it `depth` levels deep (the body itself is level 1)."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_up_to_the_bound_passes_and_one_more_level_is_refused() -> None:
    assert screen(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    err = refused(nested(MAX_DEPTH + 1))
    assert err.param == "x"
    assert "nested too deeply in 'x'" in err.message and str(MAX_DEPTH) in err.message


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_nesting_past_every_parser_is_a_400_not_a_recursion_error(depth: int) -> None:
    assert "nested too deeply" in refused(b"[" * depth + b"]" * depth).message
    assert refused(nested(depth)).status == 400


def test_deep_objects_are_counted_like_arrays() -> None:
    body = '{"a": ' + '{"b": ' * MAX_DEPTH + "1" + "}" * MAX_DEPTH + "}"
    assert refused(body).param == "a"


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "\\\\u0000 is how JSON writes NUL"}',  # an escaped backslash, not a NUL
        b'{"text": "\\ud83d\\ude00"}',  # a surrogate pair: one emoji
        b'{"text": "NaN and Infinity are words here", "n": 1e308}',
        # Many brackets, shallow: every message its own object.
        json.dumps({"messages": [{"role": "user", "content": "[{"}] * 500}).encode(),
    ],
)
def test_what_the_policy_allows_passes_and_is_returned_parsed(body: bytes) -> None:
    assert screen(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"{not json", b'{"a": 1,}', b"\xff\xfe", b"\xef\xbb\xbf{}"])
def test_what_is_not_json_is_left_to_the_schemas_parser(body: bytes) -> None:
    assert screen(body) is None


def test_an_integer_past_64_bits_is_left_to_the_schema_and_the_integer_check() -> None:
    screen(b'{"n": 99999999999999999999999}')  # web/deps.py refuses it, naming the field

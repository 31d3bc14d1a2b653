"""The bounds on schema → grammar work (inference/grammar/bounds.py, grammar_stacks.py): each
one a 400 naming the path; the adversarial schemas of issue 18 (bench/schemas.py) refused or,
for the oneOf check, answered in linear time; enums as a trie match exactly their values."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.gbnf import Grammar, matches
from tokendock.errors import InvalidRequest
from tokendock.inference.grammar.bounds import MAX_STACKS_LOGPROBS, Budget
from tokendock.inference.grammar.builder import schema_grammar
from tokendock.inference.grammar.schema import SchemaConverter
from tokendock.inference.grammar.terms import Rules
from tokendock.inference.structured import OutputFormat, answer_grammar

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import schemas as bench

P = "response_format.json_schema.schema"


def refusal(schema: Any, **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        schema_grammar(schema, param=P, **kwargs)
    assert caught.value.status == 400
    return caught.value


def test_the_stalling_anyof_is_refused_naming_the_schema() -> None:
    error = refusal(bench.stalling_anyof(60, 50))
    assert error.code == "schema_too_complex"
    assert error.param == P
    assert "parse paths" in error.message


def test_the_worst_accepted_schema_is_accepted_and_one_more_branch_is_not() -> None:
    assert schema_grammar(bench.worst_accepted(), param=P).startswith("root ::= ")
    assert refusal(bench.stalling_anyof(13, 10)).code == "schema_too_complex"


def test_a_nested_culprit_is_named_by_its_path() -> None:
    inner = bench.stalling_anyof(30, 10)
    schema = {
        "type": "object",
        "properties": {"pick": {"anyOf": inner["anyOf"]}},
        "$defs": inner["$defs"],
    }
    assert refusal(schema).param == f"{P}.properties.pick"


def test_logprobs_have_the_stricter_bound() -> None:
    schema = bench.stalling_anyof(4, 10)  # about 40 stacks
    assert schema_grammar(schema, param=P)
    error = refusal(schema, max_stacks=MAX_STACKS_LOGPROBS)
    assert "with logprobs" in error.message
    with pytest.raises(InvalidRequest):
        answer_grammar(None, OutputFormat("json_schema", schema), logprobs=True)
    # json_object mode and any-JSON schemas stay within it
    assert answer_grammar(None, OutputFormat("json_object"), logprobs=True) is not None
    assert answer_grammar(None, OutputFormat("json_schema", {}), logprobs=True) is not None


def test_enum_size_bounds() -> None:
    error = refusal({"type": "object", "properties": {"e": bench.huge_enum(9000)}})
    assert error.param == f"{P}.properties.e.enum"
    long = {"enum": ["x" * 1000 + str(i) for i in range(40)]}
    assert "characters" in refusal(long).message


def test_an_enum_is_a_trie_matching_exactly_its_values() -> None:
    values = ["a", "ab", "abc", "b", "ba", 1, 12, 1.5, None, True, {"k": [1]}, "é", 'x"y']
    grammar = Grammar(schema_grammar({"enum": values}, param=P))
    for value in values:
        assert matches(grammar, json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    for miss in ['"abcd"', '"c"', "123", "1.", "nul", '""', '"a" ']:
        assert not matches(grammar, miss), miss


def test_nine_thousand_values_would_be_one_stack_per_next_character() -> None:
    grammar = schema_grammar({"enum": bench.huge_enum(700)["enum"]}, param=P)
    assert grammar.count("a-rather-long-shared-prefix-") == 1  # the prefix written once


def test_the_exponential_one_of_is_checked_in_linear_time() -> None:
    """k^9 paths unmemoized (k = 64: ~10^16); it must finish, and the answer is unchanged."""
    for k in (2, 8, 64):
        assert schema_grammar(bench.exponential_oneof(k), param=P)
    overlapping = bench.exponential_oneof(64)
    overlapping["oneOf"][1] = {"type": "string"}
    assert refusal(overlapping).param == f"{P}.oneOf"


def test_a_deep_pattern_is_a_400_not_a_recursion_error() -> None:
    error = refusal(bench.deep_pattern(400))
    assert error.param == f"{P}.pattern"
    assert "nested more than" in error.message


def test_a_ref_chain_is_a_400_naming_where_it_got_too_deep() -> None:
    error = refusal(bench.ref_chain(400))
    assert error.param is not None and error.param.startswith(f"{P}.$defs.a")
    assert "counting each $ref" in error.message
    assert schema_grammar(bench.ref_chain(20), param=P)  # a reasonable chain still works


@pytest.mark.parametrize("key", ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_number_bounds_are_refused(key: str, value: float) -> None:
    error = refusal({"type": "number", key: value})
    assert error.param == f"{P}.{key}"


@pytest.mark.parametrize("schema", [{"enum": [float("nan")]}, {"const": [1, float("inf")]}])
def test_non_finite_constants_are_refused(schema: Any) -> None:
    assert refusal(schema).param == f"{P}.enum"


@pytest.mark.parametrize("pattern", ["^(a?){1000}$", "^(a|aa){0,1000}$", "^((a|b)?){500}$"])
def test_ambiguous_patterns_are_refused(pattern: str) -> None:
    error = refusal({"type": "string", "pattern": pattern})
    assert error.param == f"{P}" and error.code == "schema_too_complex"


@pytest.mark.parametrize(
    "pattern", ["^(\\d{1,3}\\.){3}\\d{1,3}$", "^[A-Z]{2}-[0-9]{4}$", "^(a|b){0,1000}$", "^a*b*c*$"]
)
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert schema_grammar({"type": "string", "pattern": pattern}, param=P)


def test_optional_properties_fan_out_one_stack_each() -> None:
    """After each value llama.cpp holds one stack per optional property that may come next: 60
    (a big pydantic model with defaults) fit, 200 do not; required ones cost nothing."""
    union = {"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]}
    props = {f"p{i}": union for i in range(200)}
    assert schema_grammar({"type": "object", "properties": dict(list(props.items())[:60])}, param=P)
    assert refusal({"type": "object", "properties": props}).code == "schema_too_complex"
    required = {"type": "object", "properties": props, "required": list(props)}
    assert schema_grammar(required, param=P)


def test_a_recursive_union_of_overlapping_branches_is_refused() -> None:
    """[[[[…: each level may be either branch — 2^depth stacks in llama.cpp."""
    schema = {
        "anyOf": [
            {"type": "array", "items": {"$ref": "#"}},
            {"type": "array", "prefixItems": [{"$ref": "#"}, {"type": "string"}]},
        ]
    }
    assert "without bound" in refusal(schema).message


def test_an_ordinary_recursive_schema_is_accepted() -> None:
    node = {
        "type": "object",
        "properties": {
            "value": {"anyOf": [{"type": "string"}, {"type": "number"}]},
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
        },
    }
    assert schema_grammar({"$defs": {"node": node}, "$ref": "#/$defs/node"}, param=P)


def test_the_deadline_is_a_400() -> None:
    conv = SchemaConverter(
        Rules(), bench.exponential_oneof(8), param=P, budget=Budget(-1.0, param=P)
    )
    with pytest.raises(InvalidRequest) as caught:
        conv.convert("answer")
    assert caught.value.code == "schema_too_complex"
    assert caught.value.param == P

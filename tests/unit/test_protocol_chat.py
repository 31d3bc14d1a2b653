from __future__ import annotations

from typing import Any, TypeVar

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from tokendock.errors import (
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
    TokenDockError,
    UnsupportedParameter,
)
from tokendock.inference.engine.embedded import refuse_unsupported
from tokendock.protocol.chat import (
    ChatCompletionRequest,
    delta_choice,
    message_choice,
    message_text,
)
from tokendock.protocol.common import response_body, usage_dict
from tokendock.protocol.errors import envelope, from_validation_error, param_path
from tokendock.web.api.chat import features

M = TypeVar("M", bound=BaseModel)

USER = {"role": "user", "content": "Hello"}


def parse(schema: type[M], body: dict[str, Any]) -> M:
    """JSON bytes → schema, strictly, exactly as web/deps.py parse_body does."""
    return schema.model_validate_json(orjson.dumps(body), strict=True)


def rejected(schema: type[BaseModel], body: dict[str, Any]) -> InvalidRequest:
    """The 400 parse_body would raise for `body`."""
    with pytest.raises(ValidationError) as info:
        parse(schema, body)
    return from_validation_error(info.value)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gemma-3-270m", "messages": [USER], **fields}


def check_error(**fields: Any) -> TokenDockError:
    """The 400 of the request's own rules, or of what the embedded engine cannot do (the
    features the wire adapter reads, refused by the embedded backend)."""
    req = parse(ChatCompletionRequest, chat(**fields))

    def checks() -> None:
        req.check()
        refuse_unsupported(features(req))

    with pytest.raises(TokenDockError) as info:
        checks()
    return info.value


# --- a valid request --------------------------------------------------------------------------


def test_minimal_request_parses_and_checks() -> None:
    req = parse(ChatCompletionRequest, chat())
    req.check()
    assert req.model == "gemma-3-270m"
    assert req.messages[0].role == "user"
    assert message_text(req.messages[0]) == "Hello"
    assert req.stop_list() == ()
    assert req.include_usage() is False
    assert req.token_limit() is None
    assert req.logit_bias_ids() == {}


def test_unknown_extra_fields_are_ignored() -> None:
    body = chat(frobnicate=True, extra={"a": 1}, service_tier="auto")
    body["messages"] = [{**USER, "weird": 1}]
    req = parse(ChatCompletionRequest, body)
    req.check()
    dumped = req.model_dump()
    assert "frobnicate" not in dumped
    assert "extra" not in dumped
    assert "weird" not in dumped["messages"][0]


def test_integers_are_accepted_for_float_fields() -> None:
    req = parse(
        ChatCompletionRequest,
        chat(temperature=1, top_p=0, presence_penalty=-2, frequency_penalty=2),
    )
    assert req.temperature == 1.0
    assert isinstance(req.temperature, float)
    assert req.top_p == 0.0
    assert (req.presence_penalty, req.frequency_penalty) == (-2.0, 2.0)


@pytest.mark.parametrize("field", ["n", "max_tokens", "max_completion_tokens", "seed"])
def test_booleans_are_rejected_for_integer_fields(field: str) -> None:
    err = rejected(ChatCompletionRequest, chat(**{field: True}))
    assert err.param == field
    assert err.message == (
        f"Invalid type for '{field}': input should be a valid integer (got a boolean)."
    )
    assert err.status == 400
    assert err.type == "invalid_request_error"


def test_strings_are_not_coerced_to_numbers() -> None:
    err = rejected(ChatCompletionRequest, chat(max_tokens="5"))
    assert err.param == "max_tokens"
    assert "got a string" in err.message


def test_numbers_are_not_coerced_to_booleans() -> None:
    err = rejected(ChatCompletionRequest, chat(stream=1))
    assert err.param == "stream"
    assert "valid boolean" in err.message
    assert "got a number" in err.message


# --- ranges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("temperature", 3, "less than or equal to 2"),
        ("temperature", -0.1, "greater than or equal to 0"),
        ("top_p", 1.5, "less than or equal to 1"),
        ("presence_penalty", -2.5, "greater than or equal to -2"),
        ("frequency_penalty", 2.01, "less than or equal to 2"),
        ("n", 0, "greater than or equal to 1"),
        ("n", 129, "less than or equal to 128"),
        ("max_tokens", 0, "greater than or equal to 1"),
        ("max_completion_tokens", 0, "greater than or equal to 1"),
        ("top_logprobs", 21, "less than or equal to 20"),
        ("seed", 2**63, "less than or equal to 9223372036854775807"),
    ],
)
def test_out_of_range_values_name_the_field(field: str, value: float, bound: str) -> None:
    err = rejected(ChatCompletionRequest, chat(**{field: value}))
    assert err.param == field
    assert err.message == f"Invalid value for '{field}': input should be {bound}."
    assert err.code is None


def test_temperature_bounds_are_inclusive() -> None:
    assert parse(ChatCompletionRequest, chat(temperature=0)).temperature == 0.0
    assert parse(ChatCompletionRequest, chat(temperature=2)).temperature == 2.0


# --- required fields --------------------------------------------------------------------------


def test_missing_model() -> None:
    err = rejected(ChatCompletionRequest, {"messages": [USER]})
    assert err.param == "model"
    assert err.message == "Missing required parameter: 'model'."


def test_missing_messages() -> None:
    err = rejected(ChatCompletionRequest, {"model": "m"})
    assert err.param == "messages"
    assert err.message == "Missing required parameter: 'messages'."


def test_empty_messages() -> None:
    err = rejected(ChatCompletionRequest, chat(messages=[]))
    assert err.param == "messages"
    assert "at least 1 item" in err.message


def test_empty_model_name() -> None:
    assert rejected(ChatCompletionRequest, chat(model="")).param == "model"


# --- messages ---------------------------------------------------------------------------------


def test_bad_role_names_the_message_index() -> None:
    err = rejected(ChatCompletionRequest, chat(messages=[USER, {"role": "robot", "content": "x"}]))
    assert err.param == "messages[1].role"
    assert err.message.startswith("Invalid type for 'messages[1].role': input should be ")
    assert "'user'" in err.message
    assert "'assistant'" in err.message


def test_missing_role() -> None:
    err = rejected(ChatCompletionRequest, chat(messages=[USER, USER, {"content": "x"}]))
    assert err.param == "messages[2].role"
    assert err.message == "Missing required parameter: 'messages[2].role'."


def test_content_of_wrong_type() -> None:
    err = rejected(ChatCompletionRequest, chat(messages=[{"role": "user", "content": 5}]))
    assert err.param == "messages[0].content"
    assert "got a number" in err.message


def test_text_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    req = parse(ChatCompletionRequest, chat(messages=[{"role": "user", "content": parts}]))
    req.check()
    assert message_text(req.messages[0]) == "Hello, world"


def test_text_part_without_text_is_reported_as_such() -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "text"}]}])
    err = rejected(ChatCompletionRequest, body)
    assert err.param is not None
    assert err.param.startswith("messages[0].content")
    assert "'text' string" in err.message, (
        f"a text part missing 'text' must be reported as such, not as a type error: {err.message!r}"
    )


def test_image_content_part_is_refused_naming_the_part() -> None:
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    err = check_error(messages=[{"role": "user", "content": parts}])
    assert isinstance(err, InvalidRequest)
    assert err.status == 400
    assert err.param == "messages[0].content[1]"
    assert "image_url" in err.message


def test_refusal_part_is_accepted() -> None:
    parts = [{"type": "refusal", "refusal": "no"}]
    req = parse(
        ChatCompletionRequest, chat(messages=[USER, {"role": "assistant", "content": parts}])
    )
    req.check()
    assert message_text(req.messages[1]) == ""


def test_null_content_is_missing_unless_assistant_with_tool_calls() -> None:
    err = check_error(messages=[{"role": "user", "content": None}])
    assert err.param == "messages[0].content"
    assert err.message == "Missing required parameter: 'messages[0].content'."
    calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    ok = parse(
        ChatCompletionRequest,
        chat(messages=[USER, {"role": "assistant", "content": None, "tool_calls": calls}]),
    )
    ok.check()
    assert message_text(ok.messages[1]) == ""


def test_tool_message_needs_tool_call_id() -> None:
    err = check_error(messages=[USER, {"role": "tool", "content": "42"}])
    assert err.param == "messages[1].tool_call_id"
    assert not isinstance(err, UnsupportedParameter)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    answered = {"role": "assistant", "content": None, "tool_calls": [call]}
    parse(
        ChatCompletionRequest,
        chat(messages=[USER, answered, {"role": "tool", "content": "42", "tool_call_id": "c1"}]),
    ).check()


def test_tool_message_must_answer_an_earlier_call() -> None:
    err = check_error(messages=[USER, {"role": "tool", "content": "42", "tool_call_id": "c9"}])
    assert err.param == "messages[1].tool_call_id"
    assert "c9" in err.message


def test_function_role_is_unsupported() -> None:
    err = check_error(messages=[{"role": "function", "content": "x", "name": "f"}])
    assert isinstance(err, UnsupportedParameter)
    assert err.param == "messages[0].role"


# --- stop and logit_bias ----------------------------------------------------------------------


def test_stop_string_and_list() -> None:
    assert parse(ChatCompletionRequest, chat(stop="\n")).stop_list() == ("\n",)
    assert parse(ChatCompletionRequest, chat(stop=["a", "b"])).stop_list() == ("a", "b")
    assert parse(ChatCompletionRequest, chat(stop="")).stop_list() == ()
    assert parse(ChatCompletionRequest, chat(stop=None)).stop_list() == ()


def test_stop_list_of_five_rejected() -> None:
    err = rejected(ChatCompletionRequest, chat(stop=["a", "b", "c", "d", "e"]))
    assert err.param == "stop"
    assert err.message == "Invalid value for 'stop': at most 4 stop sequences are allowed."


def test_stop_list_with_empty_string_rejected() -> None:
    err = rejected(ChatCompletionRequest, chat(stop=["a", ""]))
    assert err.param == "stop"
    assert "must not be empty" in err.message


def test_stop_of_wrong_type_rejected() -> None:
    err = rejected(ChatCompletionRequest, chat(stop=5))
    assert err.param == "stop"
    assert "got a number" in err.message


def test_logit_bias_out_of_range() -> None:
    err = rejected(ChatCompletionRequest, chat(logit_bias={"50256": -101}))
    assert err.param == "logit_bias"
    assert err.message == (
        "Invalid value for 'logit_bias': bias for token 50256 must be between -100 and 100."
    )


def test_logit_bias_key_must_be_a_token_id() -> None:
    err = rejected(ChatCompletionRequest, chat(logit_bias={"hello": 5}))
    assert err.param == "logit_bias"
    assert "'hello'" in err.message


def test_logit_bias_ids() -> None:
    req = parse(ChatCompletionRequest, chat(logit_bias={"1": 100, "42": -0.5}))
    assert req.logit_bias_ids() == {1: 100.0, 42: -0.5}


# --- check(): cross-field rules and unsupported features --------------------------------------


def test_stream_options_without_stream() -> None:
    err = check_error(stream_options={"include_usage": True})
    assert type(err) is InvalidRequest
    assert err.param == "stream_options"
    err = check_error(stream=False, stream_options={"include_usage": True})
    assert err.param == "stream_options"


def test_stream_options_with_stream() -> None:
    req = parse(ChatCompletionRequest, chat(stream=True, stream_options={"include_usage": True}))
    req.check()
    assert req.include_usage() is True
    plain = parse(ChatCompletionRequest, chat(stream=True, stream_options={}))
    assert plain.include_usage() is False


def test_top_logprobs_without_logprobs() -> None:
    err = check_error(top_logprobs=3)
    assert type(err) is InvalidRequest
    assert err.param == "top_logprobs"
    assert check_error(logprobs=False, top_logprobs=3).param == "top_logprobs"


def checked(**fields: Any) -> None:
    """The request passes its own rules and the embedded engine takes it."""
    req = parse(ChatCompletionRequest, chat(**fields))
    req.check()
    refuse_unsupported(features(req))


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def test_logprobs_are_taken() -> None:
    checked(logprobs=True)
    checked(logprobs=True, top_logprobs=20)
    checked(logprobs=False)


def test_tools_and_choices_are_taken() -> None:
    checked(tools=[TOOL])
    checked(tools=[])
    for choice in ("auto", "required", "none", {"type": "function", "function": {"name": "f"}}):
        checked(tools=[TOOL], tool_choice=choice, parallel_tool_calls=False)
    checked(tool_choice="none")
    checked(functions=[{"name": "f"}], function_call={"name": "f"})
    checked(function_call="none")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"tools": [{"type": "function", "function": {"parameters": {}}}]},
            "tools[0].function.name",
        ),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
        ({"tools": [TOOL, TOOL]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]},
            "tools[0].function.parameters",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
        ),
        ({"tools": [TOOL], "tool_choice": {"type": "function"}}, "tool_choice.function.name"),
        ({"tools": [TOOL], "functions": [{"name": "f"}]}, "functions"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
        ({"function_call": "auto", "functions": [{"description": "x"}]}, "functions[0].name"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
    ],
)
def test_malformed_tool_fields_are_400s_naming_the_field(
    fields: dict[str, Any], param: str
) -> None:
    err = check_error(**fields)
    assert err.status == 400
    assert err.param == param, err.message


@pytest.mark.parametrize("kind", ["json_schema", "json_object"])
def test_structured_response_formats_are_taken(kind: str) -> None:
    fmt: dict[str, Any] = {"type": kind}
    if kind == "json_schema":
        fmt["json_schema"] = {"name": "x", "schema": {"type": "object"}, "strict": True}
    checked(response_format=fmt)


def test_history_tool_calls_are_checked() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    checked(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ]
    )
    bad = {"id": "call_1", "type": "function", "function": {"arguments": "{}"}}
    err = check_error(messages=[{"role": "assistant", "content": None, "tool_calls": [bad]}])
    assert err.param == "messages[0].tool_calls[0].function.name"


def test_text_response_format_is_fine() -> None:
    parse(ChatCompletionRequest, chat(response_format={"type": "text"})).check()


def test_unknown_response_format_type_is_invalid_not_unsupported() -> None:
    err = check_error(response_format={"type": "xml"})
    assert type(err) is InvalidRequest
    assert err.param == "response_format.type"


def test_audio_output_is_unsupported() -> None:
    assert check_error(modalities=["text", "audio"]).param == "modalities"
    assert check_error(audio={"voice": "alloy", "format": "wav"}).param == "audio"
    parse(ChatCompletionRequest, chat(modalities=["text"])).check()


def test_prediction_is_unsupported() -> None:
    err = check_error(prediction={"type": "content", "content": "x"})
    assert isinstance(err, UnsupportedParameter)
    assert err.param == "prediction"


# --- token limit ------------------------------------------------------------------------------


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = parse(ChatCompletionRequest, chat(max_tokens=10, max_completion_tokens=20))
    assert req.token_limit() == 20
    req = parse(ChatCompletionRequest, chat(max_tokens=30, max_completion_tokens=5))
    assert req.token_limit() == 5


def test_max_tokens_alone() -> None:
    assert parse(ChatCompletionRequest, chat(max_tokens=10)).token_limit() == 10
    assert parse(ChatCompletionRequest, chat(max_completion_tokens=7)).token_limit() == 7


# --- response shapes --------------------------------------------------------------------------


def test_chat_completion_body_shape() -> None:
    choices = [message_choice(0, "hi", "stop"), message_choice(1, "yo", "length")]
    body = response_body(
        "chat.completion",
        response_id="chatcmpl-1",
        created=5,
        model="m",
        choices=choices,
        usage=usage_dict(3, 4),
    )
    assert body["object"] == "chat.completion" and body["system_fingerprint"] is None
    assert body["choices"][1] == {
        "index": 1,
        "message": {"role": "assistant", "content": "yo", "refusal": None},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert body["usage"]["total_tokens"] == 7
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_message_with_tool_calls_has_null_content() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    choice = message_choice(0, "", "tool_calls", tool_calls=[call])
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [call]


def test_chunk_usage_field_only_when_asked() -> None:
    stamp: dict[str, Any] = {"response_id": "c", "created": 1, "model": "m"}
    plain = response_body(
        "chat.completion.chunk", **stamp, choices=[delta_choice(2, {"content": "x"})]
    )
    assert "usage" not in plain
    assert plain["choices"] == [
        {"index": 2, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None}
    ]
    with_usage = response_body(
        "chat.completion.chunk", **stamp, choices=[delta_choice(0, {}, "stop")], usage=None
    )
    assert with_usage["usage"] is None
    assert with_usage["choices"][0]["finish_reason"] == "stop"


# --- protocol/errors.py -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("temperature",), "temperature"),
        (("messages", 0, "content"), "messages[0].content"),
        (("messages", 3, "content", 1, "text"), "messages[3].content[1].text"),
        (("prompt", 0, 2), "prompt[0][2]"),
        ((), ""),
    ],
)
def test_param_path(loc: tuple[int | str, ...], expected: str) -> None:
    assert param_path(loc) == expected


def test_envelope_has_exactly_the_four_fields() -> None:
    assert envelope(ModelNotFound("x")) == {
        "error": {
            "message": "The model 'x' does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    assert envelope(RequestTooLarge("big"))["error"] == {
        "message": "big",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }


def test_validation_messages_never_contain_pydantic_urls_or_internals() -> None:
    for body in (
        chat(temperature="hot"),
        chat(messages=[{"role": "user", "content": {"a": 1}}]),
        chat(stop=["a"] * 5),
        chat(n=True),
    ):
        err = rejected(ChatCompletionRequest, body)
        assert "pydantic" not in err.message
        assert "https://" not in err.message
        assert "Value error" not in err.message
        assert "list[" not in err.message

"""Every malformed request gets the OpenAI envelope, the right status and `param`, and an id."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MSGS, "max_tokens": 1, **fields}


def text(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 1, **fields}


# (id, method, path, json body or raw bytes, status, type, param, code)
CASES: list[tuple[str, str, str, Any, int, str, str | None, str | None]] = [
    ("invalid json", "POST", CHAT, b"{not json", 400, "invalid_request_error", None, None),
    ("empty body", "POST", CHAT, b"", 400, "invalid_request_error", None, None),
    ("body is array", "POST", CHAT, b"[1,2]", 400, "invalid_request_error", None, None),
    ("body is string", "POST", CHAT, b'"x"', 400, "invalid_request_error", None, None),
    (
        "missing model",
        "POST",
        CHAT,
        {"messages": MSGS},
        400,
        "invalid_request_error",
        "model",
        None,
    ),
    (
        "missing messages",
        "POST",
        CHAT,
        {"model": MODEL},
        400,
        "invalid_request_error",
        "messages",
        None,
    ),
    (
        "empty messages",
        "POST",
        CHAT,
        chat(messages=[]),
        400,
        "invalid_request_error",
        "messages",
        None,
    ),
    ("model not string", "POST", CHAT, chat(model=5), 400, "invalid_request_error", "model", None),
    (
        "unknown model",
        "POST",
        CHAT,
        chat(model="gpt-9"),
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
    ),
    (
        "bad role",
        "POST",
        CHAT,
        chat(messages=[{"role": "robot", "content": "x"}]),
        400,
        "invalid_request_error",
        "messages[0].role",
        None,
    ),
    (
        "content wrong type",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": 5}]),
        400,
        "invalid_request_error",
        "messages[0].content",
        None,
    ),
    (
        "content missing",
        "POST",
        CHAT,
        chat(messages=[{"role": "user"}]),
        400,
        "invalid_request_error",
        "messages[0].content",
        None,
    ),
    (
        "message not object",
        "POST",
        CHAT,
        chat(messages=["hi"]),
        400,
        "invalid_request_error",
        "messages[0]",
        None,
    ),
    (
        "image part",
        "POST",
        CHAT,
        chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {"type": "image_url", "image_url": {"url": "http://x"}},
                    ],
                }
            ]
        ),
        400,
        "invalid_request_error",
        "messages[0].content[1]",
        None,
    ),
    (
        "tool without id",
        "POST",
        CHAT,
        chat(messages=[{"role": "tool", "content": "r"}]),
        400,
        "invalid_request_error",
        "messages[0].tool_call_id",
        None,
    ),
    (
        "temperature high",
        "POST",
        CHAT,
        chat(temperature=2.1),
        400,
        "invalid_request_error",
        "temperature",
        None,
    ),
    (
        "temperature negative",
        "POST",
        CHAT,
        chat(temperature=-0.1),
        400,
        "invalid_request_error",
        "temperature",
        None,
    ),
    (
        "temperature string",
        "POST",
        CHAT,
        chat(temperature="hot"),
        400,
        "invalid_request_error",
        "temperature",
        None,
    ),
    ("top_p high", "POST", CHAT, chat(top_p=1.5), 400, "invalid_request_error", "top_p", None),
    ("n zero", "POST", CHAT, chat(n=0), 400, "invalid_request_error", "n", None),
    ("n too big", "POST", CHAT, chat(n=129), 400, "invalid_request_error", "n", None),
    ("n float", "POST", CHAT, chat(n=1.5), 400, "invalid_request_error", "n", None),
    (
        "max_tokens zero",
        "POST",
        CHAT,
        chat(max_tokens=0),
        400,
        "invalid_request_error",
        "max_tokens",
        None,
    ),
    (
        "max_tokens string",
        "POST",
        CHAT,
        chat(max_tokens="10"),
        400,
        "invalid_request_error",
        "max_tokens",
        None,
    ),
    (
        "max_tokens bool",
        "POST",
        CHAT,
        chat(max_tokens=True),
        400,
        "invalid_request_error",
        "max_tokens",
        None,
    ),
    (
        "max_completion_tokens negative",
        "POST",
        CHAT,
        chat(max_completion_tokens=-1),
        400,
        "invalid_request_error",
        "max_completion_tokens",
        None,
    ),
    (
        "max_tokens over the model's cap",
        "POST",
        CHAT,
        chat(max_tokens=10**6),
        400,
        "invalid_request_error",
        "max_tokens",
        None,
    ),
    (
        "context exceeded",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "hello " * 5000}], max_tokens=1),
        400,
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    ),
    (
        "five stops",
        "POST",
        CHAT,
        chat(stop=["a", "b", "c", "d", "e"]),
        400,
        "invalid_request_error",
        "stop",
        None,
    ),
    ("stop wrong type", "POST", CHAT, chat(stop=5), 400, "invalid_request_error", "stop", None),
    (
        "stream not bool",
        "POST",
        CHAT,
        chat(stream="yes"),
        400,
        "invalid_request_error",
        "stream",
        None,
    ),
    (
        "stream_options without stream",
        "POST",
        CHAT,
        chat(stream_options={"include_usage": True}),
        400,
        "invalid_request_error",
        "stream_options",
        None,
    ),
    (
        "presence_penalty range",
        "POST",
        CHAT,
        chat(presence_penalty=3),
        400,
        "invalid_request_error",
        "presence_penalty",
        None,
    ),
    (
        "frequency_penalty range",
        "POST",
        CHAT,
        chat(frequency_penalty=-2.5),
        400,
        "invalid_request_error",
        "frequency_penalty",
        None,
    ),
    (
        "logit_bias value",
        "POST",
        CHAT,
        chat(logit_bias={"10": 101}),
        400,
        "invalid_request_error",
        "logit_bias",
        None,
    ),
    (
        "logit_bias key",
        "POST",
        CHAT,
        chat(logit_bias={"abc": 1}),
        400,
        "invalid_request_error",
        "logit_bias",
        None,
    ),
    (
        "logit_bias vocab",
        "POST",
        CHAT,
        chat(logit_bias={"99999999": 1}),
        400,
        "invalid_request_error",
        "logit_bias",
        None,
    ),
    ("seed string", "POST", CHAT, chat(seed="1"), 400, "invalid_request_error", "seed", None),
    (
        "top_logprobs range",
        "POST",
        CHAT,
        chat(logprobs=True, top_logprobs=21),
        400,
        "invalid_request_error",
        "top_logprobs",
        None,
    ),
    (
        "top_logprobs alone",
        "POST",
        CHAT,
        chat(top_logprobs=2),
        400,
        "invalid_request_error",
        "top_logprobs",
        None,
    ),
    (
        "tools",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        400,
        "invalid_request_error",
        "tools[0].function.name",
        None,
    ),
    (
        "tool_choice",
        "POST",
        CHAT,
        chat(tool_choice="required"),
        400,
        "invalid_request_error",
        "tool_choice",
        None,
    ),
    (
        "json_schema",
        "POST",
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        400,
        "invalid_request_error",
        "response_format.json_schema.name",
        None,
    ),
    (
        "response_format bogus",
        "POST",
        CHAT,
        chat(response_format={"type": "yaml"}),
        400,
        "invalid_request_error",
        "response_format.type",
        None,
    ),
    ("user not string", "POST", CHAT, chat(user=42), 400, "invalid_request_error", "user", None),
    (
        "text: missing prompt",
        "POST",
        TEXT,
        {"model": MODEL},
        400,
        "invalid_request_error",
        "prompt",
        None,
    ),
    (
        "text: prompt wrong type",
        "POST",
        TEXT,
        text(prompt={"a": 1}),
        400,
        "invalid_request_error",
        "prompt",
        None,
    ),
    (
        "text: empty prompt list",
        "POST",
        TEXT,
        text(prompt=[]),
        400,
        "invalid_request_error",
        "prompt",
        None,
    ),
    (
        "text: token out of vocab",
        "POST",
        TEXT,
        text(prompt=[999999999]),
        400,
        "invalid_request_error",
        "prompt",
        None,
    ),
    (
        "text: echo not bool",
        "POST",
        TEXT,
        text(echo="y"),
        400,
        "invalid_request_error",
        "echo",
        None,
    ),
    (
        "text: suffix",
        "POST",
        TEXT,
        text(suffix="end"),
        400,
        "invalid_request_error",
        "suffix",
        "unsupported_parameter",
    ),
    (
        "text: logprobs range",
        "POST",
        TEXT,
        text(logprobs=9),
        400,
        "invalid_request_error",
        "logprobs",
        None,
    ),
    (
        "text: unknown model",
        "POST",
        TEXT,
        text(model="nope"),
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
    ),
    ("unknown route", "POST", "/v1/nothing", {}, 404, "invalid_request_error", None, "unknown_url"),
    (
        "unknown root route",
        "GET",
        "/favicon.ico",
        None,
        404,
        "invalid_request_error",
        None,
        "unknown_url",
    ),
    (
        "wrong method chat",
        "PUT",  # GET lists stored chat completions
        CHAT,
        None,
        405,
        "invalid_request_error",
        None,
        "method_not_allowed",
    ),
    (
        "wrong method models",
        "POST",
        "/v1/models",
        {},
        405,
        "invalid_request_error",
        None,
        "method_not_allowed",
    ),
    (
        "unknown model card",
        "GET",
        "/v1/models/nope",
        None,
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
    ),
    (
        "oversized body",
        "POST",
        CHAT,
        b"{" + b" " * (5 * 1024 * 1024) + b"}",
        413,
        "invalid_request_error",
        None,
        "request_too_large",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "etype", "param", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input(
    server: Server,
    method: str,
    path: str,
    body: Any,
    status: int,
    etype: str,
    param: str | None,
    code: str | None,
) -> None:
    kwargs: dict[str, Any] = {}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {"content-type": "application/json"}}
    elif body is not None:
        kwargs = {"json": body}
    headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {server.key}"}
    resp = httpx.request(method, server.base_url + path, timeout=60, headers=headers, **kwargs)
    assert resp.status_code == status, resp.text
    assert re.fullmatch(r"req_[0-9a-f]{32}", resp.headers["x-request-id"])
    assert resp.headers["content-type"].startswith("application/json")
    payload = resp.json()
    assert set(payload) == {"error"}, payload
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == etype
    assert error["param"] == param, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert "Traceback" not in error["message"]
    if param:
        # The message names the field it complains about.
        assert param.split("[")[0].split(".")[0] in error["message"], error["message"]


def test_case_count() -> None:
    assert len(CASES) >= 30

"""Malformed requests only the real model's backend refuses — its window, its vocabulary and
token ids, its output cap, image parts, `suffix`, tools and schemas it cannot follow — get the
OpenAI envelope, the right status and `param`, and an id, on SQLite and PostgreSQL. Every
model-independent case (bad JSON, types, ranges, unknown fields …) is in the in-process table,
tests/inprocess/test_bad_input.py, which runs in milliseconds."""

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
        "logit_bias vocab",
        "POST",
        CHAT,
        chat(logit_bias={"99999999": 1}),
        400,
        "invalid_request_error",
        "logit_bias",
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
        "text: suffix",
        "POST",
        TEXT,
        text(suffix="end"),
        400,
        "invalid_request_error",
        "suffix",
        "unsupported_parameter",
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


def test_no_case_is_tested_twice() -> None:
    """A case moves to the in-process table when it needs no model; none is in both."""
    from tests.inprocess.test_bad_input import CASES as FAST

    assert len(CASES) >= 5 and len(FAST) >= 60
    assert not {case[0] for case in CASES} & {case[0] for case in FAST}

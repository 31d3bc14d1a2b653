"""Every malformed request to the OpenAI-style endpoints — chat completions, completions,
embeddings, and the routes around them — gets a 400 (404, 405, 413) in OpenAI's envelope
`{"error": {"message", "type", "param", "code"}}`, `param` naming the field and the message
naming it too, and a request id. Ported from tests/e2e/test_bad_input.py (the cases that need
no model: what a backend cannot do — the window, the vocabulary, token ids, the model's output
cap, image parts, `suffix` — is its `bound()`'s to refuse, and stays in the e2e table); one app
for the whole module, every case a request to it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.inprocess.site import EMBED, MODEL, Site, Tenant, error_of, running_site

MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
EMB = "/v1/embeddings"
BAD = "invalid_request_error"


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MSGS, "max_tokens": 1, **fields}


def text(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 1, **fields}


def emb(**fields: Any) -> dict[str, Any]:
    return {"model": EMBED, "input": "hi", **fields}


# (id, method, path, JSON body or raw bytes, status, param, code)
CASES: list[tuple[str, str, str, Any, int, str | None, str | None]] = [
    ("invalid json", "POST", CHAT, b"{not json", 400, None, None),
    ("empty body", "POST", CHAT, b"", 400, None, None),
    ("body is array", "POST", CHAT, b"[1,2]", 400, None, None),
    ("body is string", "POST", CHAT, b'"x"', 400, None, None),
    ("not utf-8", "POST", CHAT, b'{"model": "\xff\xfe"}', 400, None, None),
    ("missing model", "POST", CHAT, {"messages": MSGS}, 400, "model", None),
    ("missing messages", "POST", CHAT, {"model": MODEL}, 400, "messages", None),
    ("empty messages", "POST", CHAT, chat(messages=[]), 400, "messages", None),
    ("model not string", "POST", CHAT, chat(model=5), 400, "model", None),
    ("unknown model", "POST", CHAT, chat(model="gpt-9"), 404, "model", "model_not_found"),
    (
        "bad role",
        "POST",
        CHAT,
        chat(messages=[{"role": "robot", "content": "x"}]),
        400,
        "messages[0].role",
        None,
    ),
    (
        "content wrong type",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": 5}]),
        400,
        "messages[0].content",
        None,
    ),
    (
        "content missing",
        "POST",
        CHAT,
        chat(messages=[{"role": "user"}]),
        400,
        "messages[0].content",
        None,
    ),
    ("message not object", "POST", CHAT, chat(messages=["hi"]), 400, "messages[0]", None),
    (
        "tool without id",
        "POST",
        CHAT,
        chat(messages=[{"role": "tool", "content": "r"}]),
        400,
        "messages[0].tool_call_id",
        None,
    ),
    ("temperature high", "POST", CHAT, chat(temperature=2.1), 400, "temperature", None),
    ("temperature negative", "POST", CHAT, chat(temperature=-0.1), 400, "temperature", None),
    ("temperature string", "POST", CHAT, chat(temperature="hot"), 400, "temperature", None),
    ("top_p high", "POST", CHAT, chat(top_p=1.5), 400, "top_p", None),
    ("n zero", "POST", CHAT, chat(n=0), 400, "n", None),
    ("n too big", "POST", CHAT, chat(n=129), 400, "n", None),
    ("n float", "POST", CHAT, chat(n=1.5), 400, "n", None),
    ("max_tokens zero", "POST", CHAT, chat(max_tokens=0), 400, "max_tokens", None),
    ("max_tokens string", "POST", CHAT, chat(max_tokens="10"), 400, "max_tokens", None),
    ("max_tokens bool", "POST", CHAT, chat(max_tokens=True), 400, "max_tokens", None),
    (
        "max_completion_tokens negative",
        "POST",
        CHAT,
        chat(max_completion_tokens=-1),
        400,
        "max_completion_tokens",
        None,
    ),
    ("five stops", "POST", CHAT, chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", None),
    ("stop wrong type", "POST", CHAT, chat(stop=5), 400, "stop", None),
    ("stream not bool", "POST", CHAT, chat(stream="yes"), 400, "stream", None),
    (
        "stream_options without stream",
        "POST",
        CHAT,
        chat(stream_options={"include_usage": True}),
        400,
        "stream_options",
        None,
    ),
    (
        "presence_penalty range",
        "POST",
        CHAT,
        chat(presence_penalty=3),
        400,
        "presence_penalty",
        None,
    ),
    (
        "frequency_penalty range",
        "POST",
        CHAT,
        chat(frequency_penalty=-2.5),
        400,
        "frequency_penalty",
        None,
    ),
    ("logit_bias value", "POST", CHAT, chat(logit_bias={"10": 101}), 400, "logit_bias", None),
    ("logit_bias key", "POST", CHAT, chat(logit_bias={"abc": 1}), 400, "logit_bias", None),
    ("seed string", "POST", CHAT, chat(seed="1"), 400, "seed", None),
    (
        "top_logprobs range",
        "POST",
        CHAT,
        chat(logprobs=True, top_logprobs=21),
        400,
        "top_logprobs",
        None,
    ),
    ("top_logprobs alone", "POST", CHAT, chat(top_logprobs=2), 400, "top_logprobs", None),
    (
        "tool without a name",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"parameters": {}}}]),
        400,
        "tools[0].function.name",
        None,
    ),
    (
        "tool_choice without tools",
        "POST",
        CHAT,
        chat(tool_choice="required"),
        400,
        "tool_choice",
        None,
    ),
    (
        "json_schema without a name",
        "POST",
        CHAT,
        chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        400,
        "response_format.json_schema.name",
        None,
    ),
    (
        "response_format bogus",
        "POST",
        CHAT,
        chat(response_format={"type": "yaml"}),
        400,
        "response_format.type",
        None,
    ),
    ("user not string", "POST", CHAT, chat(user=42), 400, "user", None),
    ("user too long", "POST", CHAT, chat(user="u" * 257), 400, "user", None),
    ("text: missing prompt", "POST", TEXT, {"model": MODEL}, 400, "prompt", None),
    ("text: prompt wrong type", "POST", TEXT, text(prompt={"a": 1}), 400, "prompt", None),
    ("text: empty prompt list", "POST", TEXT, text(prompt=[]), 400, "prompt", None),
    ("text: echo not bool", "POST", TEXT, text(echo="y"), 400, "echo", None),
    ("text: logprobs range", "POST", TEXT, text(logprobs=9), 400, "logprobs", None),
    ("text: unknown model", "POST", TEXT, text(model="nope"), 404, "model", "model_not_found"),
    ("embed: missing input", "POST", EMB, {"model": EMBED}, 400, "input", None),
    ("embed: empty list", "POST", EMB, emb(input=[]), 400, "input", None),
    ("embed: empty string", "POST", EMB, emb(input=""), 400, "input", None),
    ("embed: empty token list", "POST", EMB, emb(input=[[]]), 400, "input", None),
    ("embed: 4000 inputs", "POST", EMB, emb(input=["x"] * 4000), 400, "input", None),
    ("embed: input wrong type", "POST", EMB, emb(input={"a": 1}), 400, "input", None),
    ("embed: negative token", "POST", EMB, emb(input=[-1]), 400, "input[0]", None),
    ("embed: encoding", "POST", EMB, emb(encoding_format="hex"), 400, "encoding_format", None),
    ("embed: dimensions zero", "POST", EMB, emb(dimensions=0), 400, "dimensions", None),
    ("embed: unknown model", "POST", EMB, emb(model="nope"), 404, "model", "model_not_found"),
    ("embed: a chat model", "POST", EMB, emb(model=MODEL), 400, "model", "model_not_supported"),
    (
        "chat: an embedding model",
        "POST",
        CHAT,
        chat(model=EMBED),
        400,
        "model",
        "model_not_supported",
    ),
    ("unknown route", "POST", "/v1/nothing", {}, 404, None, "unknown_url"),
    ("unknown root route", "GET", "/favicon.ico", None, 404, None, "unknown_url"),
    ("wrong method chat", "PUT", CHAT, None, 405, None, "method_not_allowed"),
    ("wrong method models", "POST", "/v1/models", {}, 405, None, "method_not_allowed"),
    ("unknown model card", "GET", "/v1/models/nope", None, 404, "model", "model_not_found"),
    (
        "oversized body",
        "POST",
        CHAT,
        b"{" + b" " * (5 * 1024 * 1024) + b"}",
        413,
        None,
        "request_too_large",
    ),
]


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Site, Tenant]]:
    async with running_site(tmp_path_factory.mktemp("bad-input")) as site:
        yield site, await site.tenant()


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_input(
    shared: tuple[Site, Tenant],
    method: str,
    path: str,
    body: Any,
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    site, tenant = shared
    kwargs: dict[str, Any] = {"headers": dict(tenant.auth)}
    if isinstance(body, bytes):
        kwargs = {"content": body, "headers": {**tenant.auth, "content-type": "application/json"}}
    elif body is not None:
        kwargs["json"] = body
    resp = await site.http.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    assert re.fullmatch(r"req_[0-9a-f]{32}", resp.headers["x-request-id"])
    assert resp.headers["content-type"].startswith("application/json")
    error = error_of(resp)
    assert error["type"] == BAD
    assert error["param"] == param, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    assert "Traceback" not in error["message"]
    if param:  # the message names the field it complains about
        assert param.split("[")[0].split(".")[0] in error["message"], error["message"]


async def test_nothing_malformed_reached_a_model_or_the_ledger(
    shared: tuple[Site, Tenant],
) -> None:
    site, tenant = shared
    assert site.backend.runs == []
    assert await site.holds(tenant) == []
    await site.settled_cleanly()


def test_case_count() -> None:
    assert len(CASES) >= 60

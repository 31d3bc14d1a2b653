"""The errors of the Responses API and of Anthropic's Messages API, and 401 / 404 on all three
API styles (chat and completions, Responses, Messages), in-process on one app for the module.

OpenAI-style routes answer `{"error": {"message", "type", "param", "code"}}` with `param`
naming the field; /v1/messages answers Anthropic's `{"type": "error", "error": {"type",
"message"}}` (no `param`: the message names the field). Ported from the error tests of
tests/e2e/test_anthropic_sdk.py, test_responses_sdk.py and test_billing.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from tests.inprocess.site import (
    EMBED,
    MODEL,
    Site,
    Tenant,
    anthropic_error_of,
    error_of,
    running_site,
)

MSGS = [{"role": "user", "content": "hi"}]
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Site, Tenant]]:
    async with running_site(tmp_path_factory.mktemp("front-doors")) as site:
        yield site, await site.tenant()


def resp(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "hi", "max_output_tokens": 4, **fields}


def fc(**fields: Any) -> list[dict[str, Any]]:
    return [{"type": "function_call", "name": "f", "arguments": "{}", **fields}]


# (id, body, param)
RESPONSES: list[tuple[str, Any, str | None]] = [
    ("invalid json", b"{", None),
    ("missing input", {"model": MODEL}, "input"),
    ("missing model", {"input": "hi"}, "model"),
    ("max_output_tokens zero", resp(max_output_tokens=0), "max_output_tokens"),
    ("temperature high", resp(temperature=3), "temperature"),
    ("top_p high", resp(top_p=2), "top_p"),
    ("a web search tool", resp(tools=[{"type": "web_search"}]), "tools[0].type"),
    ("a tool's bad name", resp(tools=[{**WEATHER, "name": "a b"}]), "tools[0].name"),
    ("a tool's parameters", resp(tools=[{**WEATHER, "parameters": 5}]), "tools[0].parameters"),
    ("tools named twice", resp(tools=[WEATHER, WEATHER]), "tools"),
    ("tool_choice word", resp(tool_choice="sometimes"), "tool_choice"),
    ("tool_choice required alone", resp(tool_choice="required"), "tool_choice"),
    ("tool_choice without name", resp(tool_choice={"type": "function"}), "tool_choice.name"),
    (
        "tool_choice not offered",
        resp(tools=[WEATHER], tool_choice={"type": "function", "name": "other"}),
        "tool_choice.name",
    ),
    ("text format yaml", resp(text={"format": {"type": "yaml"}}), "text.format.type"),
    (
        "json_schema without a name",
        resp(text={"format": {"type": "json_schema", "schema": {}}}),
        "text.format.name",
    ),
    (
        "json_schema without a schema",
        resp(text={"format": {"type": "json_schema", "name": "x"}}),
        "text.format.schema",
    ),
    ("background unstored", resp(background=True, store=False), "store"),
    ("background streamed", resp(background=True, stream=True), "stream"),
    ("truncation word", resp(truncation="sometimes"), "truncation"),
    ("stream not bool", resp(stream="yes"), "stream"),
    ("a robot's message", resp(input=[{"role": "robot", "content": "x"}]), "input[0].role"),
    ("an unknown item", resp(input=[{"type": "reasoning"}]), "input[0].type"),
    (
        "an image part",
        resp(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
        "input[0].content[0].type",
    ),
    ("content not text", resp(input=[{"role": "user", "content": 5}]), "input[0].content"),
    ("a call without call_id", resp(input=fc()), "input[0].call_id"),
    ("a call's bad id", resp(input=fc(call_id="c", id="bad id!")), "input[0].id"),
    (
        "an output without output",
        resp(input=[{"type": "function_call_output", "call_id": "c"}]),
        "input[0].output",
    ),
    ("user not string", resp(user=5), "user"),
]


@pytest.mark.parametrize(("body", "param"), [pytest.param(*c[1:], id=c[0]) for c in RESPONSES])
async def test_responses_bad_input(
    shared: tuple[Site, Tenant], body: Any, param: str | None
) -> None:
    site, tenant = shared
    got = await site.post("/v1/responses", body, tenant)
    assert got.status_code == 400, got.text
    assert re.fullmatch(r"req_[0-9a-f]{32}", got.headers["x-request-id"])
    error = error_of(got)
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    if param:
        assert param.split("[")[0].split(".")[0] in error["message"], error["message"]


def msg(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 4, "messages": MSGS, **fields}


TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}
USE = {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}

# (id, body, a word the message must contain)
MESSAGES: list[tuple[str, Any, str]] = [
    ("invalid json", b"{", "JSON"),
    ("missing max_tokens", {"model": MODEL, "messages": MSGS}, "max_tokens"),
    ("max_tokens zero", msg(max_tokens=0), "max_tokens"),
    ("missing messages", {"model": MODEL, "max_tokens": 4}, "messages"),
    ("empty messages", msg(messages=[]), "messages"),
    ("a system role message", msg(messages=[{"role": "system", "content": "x"}]), "role"),
    ("temperature over 1", msg(temperature=1.5), "temperature"),
    ("top_p over 1", msg(top_p=1.5), "top_p"),
    ("top_k negative", msg(top_k=-1), "top_k"),
    ("too many stop sequences", msg(stop_sequences=["s"] * 17), "stop_sequences"),
    ("an empty stop sequence", msg(stop_sequences=[""]), "stop_sequences"),
    ("tools named twice", msg(tools=[TOOL, TOOL]), "tools"),
    ("a tool's bad name", msg(tools=[{**TOOL, "name": "a b"}]), "name"),
    ("tool_choice tool without name", msg(tools=[TOOL], tool_choice={"type": "tool"}), "name"),
    ("tool_choice word", msg(tool_choice={"type": "sometimes"}), "tool_choice"),
    (
        "a tool_use block from the user",
        msg(messages=[{"role": "user", "content": [USE]}]),
        "tool_use",
    ),
    (
        "a block of no known type",
        msg(messages=[{"role": "user", "content": [{"type": "x"}]}]),
        "type",
    ),
    ("stream not bool", msg(stream="yes"), "stream"),
]


@pytest.mark.parametrize(("body", "word"), [pytest.param(*c[1:], id=c[0]) for c in MESSAGES])
async def test_messages_bad_input_in_anthropics_envelope(
    shared: tuple[Site, Tenant], body: Any, word: str
) -> None:
    site, tenant = shared
    got = await site.post("/v1/messages", body, None, **{"x-api-key": tenant.key})
    assert got.status_code == 400, got.text
    assert got.headers["x-request-id"].startswith("req_")
    error = anthropic_error_of(got)
    assert error["type"] == "invalid_request_error"
    assert word in error["message"], error["message"]


async def test_the_anthropic_sdk_raises_its_bad_request(shared: tuple[Site, Tenant]) -> None:
    site, tenant = shared
    with pytest.raises(anthropic.BadRequestError) as bad:
        await tenant.claude.messages.create(
            model=MODEL,
            max_tokens=5,
            messages=MSGS,  # type: ignore[arg-type]
            extra_body={"temperature": 1.5},
        )
    assert "temperature" in anthropic_error_of(bad.value.response)["message"]
    wrong_method = await site.http.get("/v1/messages", headers={"x-api-key": tenant.key})
    assert wrong_method.status_code == 405
    assert anthropic_error_of(wrong_method)["type"] == "invalid_request_error"
    big = await site.post("/v1/messages", b"a" * (5 * 1024 * 1024), None, **{"x-api-key": "k"})
    assert big.status_code == 413
    assert anthropic_error_of(big)["type"] == "request_too_large"


OPENAI_ROUTES = [
    ("/v1/chat/completions", {"model": MODEL, "messages": MSGS}),
    ("/v1/completions", {"model": MODEL, "prompt": "hi"}),
    ("/v1/embeddings", {"model": EMBED, "input": "hi"}),
    ("/v1/responses", {"model": MODEL, "input": "hi"}),
    ("/v1/responses/input_tokens", {"model": MODEL, "input": "hi"}),
]
ANTHROPIC_ROUTES = [
    ("/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": MSGS}),
    ("/v1/messages/count_tokens", {"model": MODEL, "messages": MSGS}),
]


@pytest.mark.parametrize(("path", "body"), OPENAI_ROUTES, ids=[r[0] for r in OPENAI_ROUTES])
async def test_401_on_openai_style_routes(
    shared: tuple[Site, Tenant], path: str, body: Any
) -> None:
    site, _ = shared
    missing = await site.post(path, body, None)
    assert missing.status_code == 401
    assert missing.headers["x-request-id"].startswith("req_")
    error = error_of(missing)
    assert error["type"] == "invalid_request_error" and error["code"] is None
    assert "API key" in error["message"]
    wrong = await site.post(path, body, None, Authorization="Bearer td-not-a-real-key-1234")
    assert wrong.status_code == 401
    error = error_of(wrong)
    assert error["code"] == "invalid_api_key"
    assert "td-not-a-real-key-1234" not in error["message"]  # never echo a whole key


@pytest.mark.parametrize(("path", "body"), ANTHROPIC_ROUTES, ids=[r[0] for r in ANTHROPIC_ROUTES])
async def test_401_on_the_messages_api(shared: tuple[Site, Tenant], path: str, body: Any) -> None:
    site, _ = shared
    for headers in ({}, {"x-api-key": "td-" + "x" * 48}, {"Authorization": "Bearer td-nope"}):
        got = await site.post(path, body, None, **headers)
        assert got.status_code == 401
        assert anthropic_error_of(got)["type"] == "authentication_error"


async def test_401_through_both_sdks(shared: tuple[Site, Tenant]) -> None:
    site, _ = shared
    oai, claude = site.clients("td-" + "x" * 48)
    with pytest.raises(openai.AuthenticationError) as refused:
        await oai.responses.create(model=MODEL, input="hi")
    assert refused.value.code == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.create(model=MODEL, max_tokens=5, messages=MSGS)  # type: ignore[arg-type]
    with pytest.raises(anthropic.AuthenticationError):
        await claude.messages.count_tokens(model=MODEL, messages=MSGS)  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "body"), OPENAI_ROUTES, ids=[r[0] for r in OPENAI_ROUTES])
async def test_404_unknown_model_on_openai_style_routes(
    shared: tuple[Site, Tenant], path: str, body: Any
) -> None:
    site, tenant = shared
    got = await site.post(path, {**body, "model": "no-such-model"}, tenant)
    assert got.status_code == 404
    error = error_of(got)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "no-such-model" in error["message"]


@pytest.mark.parametrize(("path", "body"), ANTHROPIC_ROUTES, ids=[r[0] for r in ANTHROPIC_ROUTES])
async def test_404_unknown_model_on_the_messages_api(
    shared: tuple[Site, Tenant], path: str, body: Any
) -> None:
    site, tenant = shared
    got = await site.post(path, {**body, "model": "no-such-model"}, tenant)
    assert got.status_code == 404
    error = anthropic_error_of(got)
    assert error["type"] == "not_found_error" and "no-such-model" in error["message"]


async def test_the_x_api_key_header_and_anthropic_version(shared: tuple[Site, Tenant]) -> None:
    site, tenant = shared
    headers = {"x-api-key": tenant.key, "anthropic-version": "2023-06-01"}
    got = await site.post("/v1/messages", msg(), None, **headers)
    assert got.status_code == 200, got.text
    assert got.json()["type"] == "message"


async def test_no_error_reached_the_ledger(shared: tuple[Site, Tenant]) -> None:
    site, tenant = shared
    assert len(await site.holds(tenant)) <= 1  # the x-api-key test's one answer at most
    await site.settled_cleanly()

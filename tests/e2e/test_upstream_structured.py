"""Tool calls, structured outputs and logprobs through an upstream deployment: the gateway's model
is a second TokenDock serving the embedded model. Through the official SDK each request's fields
reach the upstream, its answer comes back in OpenAI's shapes, and the gateway bills it from the
upstream's usage: the key's balance drops by exactly the priced tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server
from tests.e2e.test_structured_sdk import PERSON_ASK, PERSON_SCHEMA, TOOLS, WEATHER_ASK
from tests.e2e.upstreams import cost, model_entry, usage_row

REMOTE = "via-tokendock"
WEATHER = TOOLS[0]["function"]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    upstream = start_server(tmp_path_factory.mktemp("structured-upstream"))
    workdir = tmp_path_factory.mktemp("structured-gateway")
    catalog = workdir / "models.toml"
    deployment = {"name": "tokendock-2", "base_url": upstream.v1, "model": MODEL}
    catalog.write_text(model_entry(REMOTE, [{**deployment, "api_key_env": "TD_UPSTREAM_KEY"}]))
    env = {"TOKENDOCK_MODELS_FILE": str(catalog), "TD_UPSTREAM_KEY": upstream.key}
    try:
        srv = start_server(workdir, env)
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        upstream.stop()


@pytest.fixture
def gclient(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=120)


def balance(server: Server) -> int:
    reply = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {server.key}"})
    return int(reply.json()["balance_micro_credits"])


class Billed:
    """The gateway's balance before and after the block: it drops by exactly the priced usage,
    which is the upstream's own (not estimated) and recorded under the request id."""

    def __init__(self, gateway: Server):
        self.gateway = gateway

    def __enter__(self) -> Billed:
        self.before = balance(self.gateway)
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            assert self.usage is not None, "no usage reported"
            charged = cost(self.usage.prompt_tokens, self.usage.completion_tokens)
            assert self.usage.prompt_tokens > 0 and self.usage.completion_tokens > 0
            assert balance(self.gateway) == self.before - charged
            row = usage_row(self.gateway, self.request_id)
            assert (row["model"], row["deployment"]) == (REMOTE, "tokendock-2")
            assert (row["cost_micro_credits"], row["estimated"]) == (charged, False)

    def saw(self, raw: Any, usage: Any) -> None:
        self.request_id = raw.headers["x-request-id"]
        self.usage = usage


def weather_args(arguments: str) -> dict[str, Any]:
    args: dict[str, Any] = json.loads(arguments)
    jsonschema.validate(args, WEATHER["parameters"])
    return args


def test_required_tool_call(gateway: Server, gclient: openai.OpenAI) -> None:
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(
            model=REMOTE,
            messages=WEATHER_ASK,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=200,
        )
        reply = raw.parse()
        bill.saw(raw, reply.usage)
    choice = reply.choices[0]
    assert reply.model == REMOTE and choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id.startswith("call_") and calls[0].type == "function"
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    jsonschema.validate(json.loads(calls[0].function.arguments), schemas[calls[0].function.name])


def test_named_tool_call_streamed_reassembles(gateway: Server, gclient: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": REMOTE, "messages": WEATHER_ASK, "tools": TOOLS}
    ask |= {"tool_choice": NAMED, "parallel_tool_calls": False, "max_tokens": 120}
    ask |= {"temperature": 0}
    usage = {"stream_options": {"include_usage": True}}
    whole = gclient.chat.completions.create(**ask)
    assert whole.choices[0].finish_reason == "tool_calls"
    expected = weather_args((whole.choices[0].message.tool_calls or [])[0].function.arguments)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(**ask, stream=True, **usage)
        chunks = list(raw.parse())
        bill.saw(raw, chunks[-1].usage)
    for chunk in chunks:
        for choice in chunk.choices:
            for piece in choice.delta.tool_calls or ():
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += piece.id or ""
                call["name"] += (piece.function and piece.function.name) or ""
                call["arguments"] += (piece.function and piece.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    assert calls[0]["id"].startswith("call_")
    assert weather_args(calls[0]["arguments"]) == expected


def test_json_schema_answer_validates(gateway: Server, gclient: openai.OpenAI) -> None:
    schema = {"name": "person", "schema": PERSON_SCHEMA, "strict": True}
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(
            model=REMOTE,
            messages=PERSON_ASK,
            response_format={"type": "json_schema", "json_schema": schema},
            temperature=1,
            max_tokens=200,
        )
        reply = raw.parse()
        bill.saw(raw, reply.usage)
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content or ""), PERSON_SCHEMA)


def test_chat_logprobs_with_top_logprobs(gateway: Server, gclient: openai.OpenAI) -> None:
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(  # greedy: no split character
            model=REMOTE,
            messages=WEATHER_ASK,
            logprobs=True,
            top_logprobs=4,
            max_tokens=8,
            temperature=0,
        )
        reply = raw.parse()
        bill.saw(raw, reply.usage)
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert reply.usage is not None and len(entries) == reply.usage.completion_tokens
    for e in entries:
        values = [t.logprob for t in e.top_logprobs]
        assert len(values) == 4 and values == sorted(values, reverse=True)
        assert e.logprob <= values[0] + 1e-6 and all(v <= 0 for v in values)


def test_completions_logprobs(gateway: Server, gclient: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    with Billed(gateway) as bill:
        raw = gclient.completions.with_raw_response.create(
            model=REMOTE, prompt=prompt, logprobs=3, echo=True, max_tokens=5, temperature=0
        )
        reply = raw.parse()
        bill.saw(raw, reply.usage)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert choice.text.startswith(prompt) and "".join(lp.tokens) == choice.text
    assert lp.text_offset is not None and lp.text_offset[0] == 0
    assert all(v is None or v <= 0 for v in lp.token_logprobs)
    assert None not in lp.token_logprobs[1:]  # only a first token without context goes unscored
    assert all(t is None or 1 <= len(t) <= 3 for t in lp.top_logprobs)


def test_deprecated_functions_give_a_function_call(gateway: Server, gclient: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": REMOTE, "messages": WEATHER_ASK, "functions": [WEATHER]}
    ask |= {"function_call": {"name": "get_weather"}, "max_tokens": 120, "temperature": 0}
    usage = {"stream_options": {"include_usage": True}}
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(**ask)
        reply = raw.parse()
        bill.saw(raw, reply.usage)
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call is not None
    assert choice.message.function_call.name == "get_weather"
    expected = weather_args(choice.message.function_call.arguments)
    name, arguments, finish = "", "", None
    with Billed(gateway) as bill:
        raw = gclient.chat.completions.with_raw_response.create(**ask, stream=True, **usage)
        chunks = list(raw.parse())
        bill.saw(raw, chunks[-1].usage)
    for chunk in chunks:
        for c in chunk.choices:
            assert c.delta.tool_calls is None
            if c.delta.function_call:
                name += c.delta.function_call.name or ""
                arguments += c.delta.function_call.arguments or ""
            finish = c.finish_reason or finish
    assert (name, finish) == ("get_weather", "function_call")
    assert weather_args(arguments) == expected

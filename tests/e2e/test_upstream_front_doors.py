"""The Responses API and Anthropic's Messages API in front of an upstream deployment: the
gateway's model is a second TokenDock, called with chat completions underneath. Through the
official SDKs the answer comes back in each API's shapes, with tool calls, and the gateway bills
it from the upstream's usage: the key's balance drops by exactly the priced tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e import test_upstream_structured as structured
from tests.e2e.server import Server
from tests.e2e.test_structured_sdk import TOOLS
from tests.e2e.upstreams import cost, usage_row

REMOTE, balance = structured.REMOTE, structured.balance
# The same pair of servers (a gateway in front of a second TokenDock), a module fixture here too.
gateway = structured.gateway

WEATHER = TOOLS[0]["function"]
ASK = "What is the weather in Paris?"


@pytest.fixture
def oai(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=120)


@pytest.fixture
def claude(gateway: Server) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=120
    )
    yield client
    client.close()


def billed(gateway: Server, before: int, request_id: str, prompt: int, completion: int) -> None:
    charged = cost(prompt, completion)
    assert prompt > 0 and completion > 0
    assert balance(gateway) == before - charged
    row = usage_row(gateway, request_id)
    assert (row["model"], row["deployment"]) == (REMOTE, "tokendock-2")
    assert (row["cost_micro_credits"], row["estimated"]) == (charged, False)


def test_responses_text_through_the_upstream(gateway: Server, oai: openai.OpenAI) -> None:
    before = balance(gateway)
    raw = oai.responses.with_raw_response.create(
        model=REMOTE, input=ASK, instructions="Answer briefly.", max_output_tokens=12
    )
    resp = raw.parse()
    assert resp.output_text
    assert resp.usage is not None
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        resp.usage.input_tokens,
        resp.usage.output_tokens,
    )


def test_responses_function_call_through_the_upstream(gateway: Server, oai: openai.OpenAI) -> None:
    tool = {"type": "function", "name": WEATHER["name"], "parameters": WEATHER["parameters"]}
    resp = oai.responses.create(
        model=REMOTE,
        input=ASK,
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        max_output_tokens=120,
    )
    calls = [item for item in resp.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert isinstance(json.loads(calls[0].arguments), dict)


def test_messages_text_and_stream_through_the_upstream(
    gateway: Server, claude: anthropic.Anthropic
) -> None:
    before = balance(gateway)
    raw = claude.messages.with_raw_response.create(
        model=REMOTE, max_tokens=12, messages=[{"role": "user", "content": ASK}]
    )
    msg = raw.parse()
    assert msg.content and msg.content[0].type == "text"
    billed(
        gateway,
        before,
        raw.headers["x-request-id"],
        # Anthropic's input_tokens leave out the prompt tokens read from cache (the upstream's)
        msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0),
        msg.usage.output_tokens,
    )
    with claude.messages.stream(
        model=REMOTE, max_tokens=12, messages=[{"role": "user", "content": ASK}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0


def test_messages_tool_use_through_the_upstream(claude: anthropic.Anthropic) -> None:
    tool: Any = {
        "name": "get_weather",
        "description": WEATHER["description"],
        "input_schema": WEATHER["parameters"],
    }
    msg = claude.messages.create(
        model=REMOTE,
        max_tokens=120,
        messages=[{"role": "user", "content": ASK}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    )
    uses = [block for block in msg.content if block.type == "tool_use"]
    assert msg.stop_reason == "tool_use"
    assert uses and uses[0].name == "get_weather" and isinstance(uses[0].input, dict)

"""The tool-call budget cut with the real packaged model, through the whole app in-process and
the official SDKs: asked to call a function (`tool_choice` "required", Messages `any`,
Responses "required") with parallel calls allowed, Gemma 270M writes call after call (up to
the grammar's 8); an output budget that runs out inside a later call ends the answer with the
complete calls — `tool_calls` / `tool_use` / `completed`, each call's arguments valid JSON —
the cut call dropped and its tokens still billed. A budget cut inside the first call stays
`length`. (One call of this prompt is about 35 tokens; a budget of 60 cuts the second.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess.conftest import registry_of
from tests.inprocess.site import Site, running_site, sse_data
from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.inference.engine.embedded import EmbeddedBackend
from tokendock.inference.engine.llama import LlamaEngine

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"
MODEL = "gemma-cut"
BUDGET = 60  # past the first call, inside the second
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"],
    "additionalProperties": False,
}
ASK = "What is the weather in Paris, Rome, Oslo and Lima?"
CHAT_TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The weather", "parameters": CITY},
    }
]

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    spec = ModelSpec(
        id=MODEL,
        path=GGUF,
        context_length=1024,
        threads=1,
        chat_template="gemma",
        slots=1,
        deterministic=True,
        price=PriceSpec(input="1", output="2"),
    )
    embedded = EmbeddedBackend(LlamaEngine(spec, ROOT / "data"), spec)
    async with running_site(tmp_path, more=lambda _, embed: registry_of(embedded, embed)) as s:
        for _ in range(600):  # the model loads in the background: up to a minute
            if embedded.ready:
                break
            await asyncio.sleep(0.1)
        yield s


def valid_calls(calls: list[tuple[str, str]]) -> None:
    assert calls, "at least one complete call"
    for name, arguments in calls:
        assert name == "get_weather"
        assert isinstance(json.loads(arguments)["city"], str)


async def test_chat_ends_with_the_complete_calls_whole_and_streamed(site: Site) -> None:
    tenant = await site.tenant()
    oai = tenant.oai
    asked: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": ASK}],
        "tools": CHAT_TOOLS,
        "tool_choice": "required",
        "max_tokens": BUDGET,
        "temperature": 0,
    }
    whole = await oai.chat.completions.create(**asked)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    valid_calls(calls)
    assert whole.usage is not None and whole.usage.completion_tokens == BUDGET  # all billed

    stream = await oai.chat.completions.create(
        **asked, stream=True, stream_options={"include_usage": True}
    )
    pieces: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    finish, usage = None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for piece in c.delta.tool_calls or []:
                assert piece.function is not None
                if piece.function.name:
                    names[piece.index] = piece.function.name
                pieces.setdefault(piece.index, []).append(piece.function.arguments or "")
    assert finish == "tool_calls"
    streamed = [(names[i], "".join(pieces[i])) for i in sorted(pieces)]
    assert streamed == calls  # nothing of the cut call reached the stream
    assert usage is not None and usage.completion_tokens == BUDGET
    rows = await site.usage(tenant)
    assert [r["completion_tokens"] for r in rows] == [BUDGET, BUDGET]


async def test_a_cut_inside_the_first_call_stays_length(site: Site) -> None:
    tenant = await site.tenant()
    answer = await tenant.oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": ASK}],
        tools=CHAT_TOOLS,
        tool_choice="required",
        max_tokens=12,
        temperature=0,
    )
    assert answer.choices[0].finish_reason == "length"


async def test_messages_any_ends_with_tool_use(site: Site) -> None:
    tenant = await site.tenant()
    tool: Any = {"name": "get_weather", "description": "The weather", "input_schema": CITY}
    asked: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": BUDGET,
        "messages": [{"role": "user", "content": ASK}],
        "tools": [tool],
        "tool_choice": {"type": "any"},
        "extra_body": {"temperature": 0},  # (this SDK version has no such argument)
    }
    message = await tenant.claude.messages.create(**asked)
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    valid_calls([(b.name, json.dumps(b.input)) for b in uses])
    async with tenant.claude.messages.stream(**asked) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert [b.input for b in final.content if b.type == "tool_use"] == [b.input for b in uses]


async def test_responses_complete_with_the_function_calls(site: Site) -> None:
    tenant = await site.tenant()
    response = await tenant.oai.responses.create(
        model=MODEL,
        input=ASK,
        tools=[{"type": "function", "name": "get_weather", "parameters": CITY, "strict": False}],
        tool_choice="required",
        max_output_tokens=BUDGET,
        temperature=0,
        store=False,
    )
    assert response.status == "completed"
    made = [i for i in response.output if i.type == "function_call"]
    valid_calls([(i.name, i.arguments) for i in made])
    assert len(made) == len(response.output)  # the calls and nothing else
    assert all(i.status == "completed" for i in made)


async def test_embedded_logprobs_carry_an_empty_refusal_list(site: Site) -> None:
    """Not null: the official Go SDK reads a null list as missing."""
    tenant = await site.tenant()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    for stream in (False, True):
        resp = await site.post(
            "/v1/chat/completions", {**body, "logprobs": True, "stream": stream}, tenant
        )
        assert resp.status_code == 200, resp.text
        if not stream:
            logprobs = [resp.json()["choices"][0]["logprobs"]]
        else:
            chunks = sse_data(resp.text)
            logprobs = [
                c["choices"][0]["logprobs"]
                for c in chunks
                if c != "[DONE]" and c["choices"] and c["choices"][0]["logprobs"]
            ]
        assert logprobs and all(lp["refusal"] == [] and lp["content"] for lp in logprobs)

"""The Responses API (/v1/responses) through the official openai SDK against the real server and
the embedded model: text, instructions, JSON schema, a function call and its output in a second
turn (previous_response_id), the SDK's stream helper, stored responses (retrieve, delete,
input items), background + poll + cancel, input token counts, and another account's ids."""

from __future__ import annotations

import json
import time
from typing import Any

import jsonschema
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.test_structured_sdk import PERSON_SCHEMA, WEATHER_PARAMS

STORY = "Write a long story about a dragon who loves books."
TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city now.",
        "parameters": WEATHER_PARAMS,
        "strict": True,
    }
]


def test_text_with_instructions(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=MODEL,
        instructions="You answer in one short sentence.",
        input="Say hello to Ada.",
        max_output_tokens=40,
        temperature=0,
    )
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.model == MODEL and resp.status in ("completed", "incomplete")
    assert resp.instructions == "You answer in one short sentence."
    message = resp.output[0]
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "output_text"
    assert resp.output_text and resp.output_text == message.content[0].text
    usage = resp.usage
    assert usage is not None and usage.input_tokens > 10
    assert 1 <= usage.output_tokens <= 40
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 <= usage.input_tokens_details.cached_tokens <= usage.input_tokens  # prefix cache
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert resp.store is True and resp.error is None


def test_cut_by_max_output_tokens_is_incomplete(client: openai.OpenAI) -> None:
    resp = client.responses.create(model=MODEL, input=STORY, max_output_tokens=5, temperature=0)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 5
    assert resp.output[0].status == "incomplete"


def test_json_schema_answer(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Describe a person as JSON."}],
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON_SCHEMA}},
        max_output_tokens=200,
        temperature=1,
    )
    assert resp.status == "completed"
    jsonschema.validate(json.loads(resp.output_text), PERSON_SCHEMA)
    assert resp.text is not None and resp.text.format.type == "json_schema"


def test_function_call_then_its_output_via_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=120,
        temperature=0,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1, first.output
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.id and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)
    assert first.status == "completed"
    second = client.responses.create(
        model=MODEL,
        previous_response_id=first.id,
        input=[
            {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": '{"temperature_c": 21, "sky": "clear"}',
            }
        ],
        tools=TOOLS,
        max_output_tokens=40,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.status in ("completed", "incomplete")
    assert second.output_text or any(i.type == "function_call" for i in second.output)
    assert first.usage is not None and second.usage is not None
    # The second turn reads the whole conversation: the question, the call and its output.
    assert second.usage.input_tokens > first.usage.input_tokens + 10
    listed = client.responses.input_items.list(second.id)
    assert [i.type for i in listed.data] == ["function_call_output"]


def test_stream_assembles_text(client: openai.OpenAI) -> None:
    whole = client.responses.create(model=MODEL, input=STORY, max_output_tokens=16, temperature=0)
    kinds, deltas, numbers = [], [], []
    with client.responses.stream(
        model=MODEL, input=STORY, max_output_tokens=16, temperature=0
    ) as stream:
        for event in stream:
            kinds.append(event.type)
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.incomplete":  # cut: the SDK's get_final_response()
                final = event.response  # waits for response.completed only, as with OpenAI
    assert numbers == list(range(len(numbers)))
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert len(deltas) > 3
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage is not None and final.usage.output_tokens == 16
    assert final.id.startswith("resp_")


def test_stream_assembles_a_function_call(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {
        "model": MODEL,
        "input": "What is the weather in Paris?",
        "tools": TOOLS,
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
        "max_output_tokens": 120,
        "temperature": 0,
    }
    whole = client.responses.create(**ask)
    pieces, done = [], []
    with client.responses.stream(**ask) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                pieces.append(event.delta)
            elif event.type == "response.function_call_arguments.done":
                done.append(event.arguments)
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert len(pieces) > 1 and "".join(pieces) == done[0] == call.arguments
    assert call.arguments == whole.output[0].arguments  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)
    retrieved = client.responses.retrieve(final.id)  # a stream is stored too
    assert retrieved.output[0].arguments == call.arguments  # type: ignore[union-attr]


def test_input_items_paginated(client: openai.OpenAI) -> None:
    said = [f"Message number {i}." for i in range(5)]
    resp = client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": text} for text in said],
        max_output_tokens=2,
    )
    page = client.responses.input_items.list(resp.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == said[:2]  # type: ignore[union-attr]
    assert page.has_more and page.first_id == page.data[0].id
    following = client.responses.input_items.list(resp.id, limit=2, order="asc", after=page.last_id)
    assert [i.content[0].text for i in following.data] == said[2:4]  # type: ignore[union-attr]
    everything = list(client.responses.input_items.list(resp.id, limit=2))  # auto-paginated
    assert [i.content[0].text for i in everything] == said[::-1]  # type: ignore[union-attr]
    assert all(i.type == "message" and i.role == "user" for i in everything)  # type: ignore[union-attr]


def poll(client: openai.OpenAI, response_id: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        resp = client.responses.retrieve(response_id)
        if resp.status not in ("queued", "in_progress") or time.monotonic() > deadline:
            return resp
        time.sleep(0.2)


def test_background_polled(client: openai.OpenAI) -> None:
    resp = client.responses.create(
        model=MODEL, input=STORY, max_output_tokens=8, temperature=0, background=True
    )
    assert resp.status in ("queued", "in_progress") and resp.background is True
    done = poll(client, resp.id)
    assert done.status == "incomplete" and done.usage.output_tokens == 8
    plain = client.responses.create(model=MODEL, input=STORY, max_output_tokens=8, temperature=0)
    assert done.output_text == plain.output_text


def usage_rows(client: openai.OpenAI, request_id: str) -> list[dict[str, Any]]:
    for _ in range(50):  # the settlement may land just after the answer
        data = client.get("/usage", cast_to=object, options={"params": {"limit": 200}})
        rows = [r for r in data["data"] if r["request_id"] == request_id]  # type: ignore[index]
        if rows:
            return rows
        time.sleep(0.1)
    return []


def test_input_tokens_count_what_a_response_reads(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": TOOLS,
    }
    counted = client.responses.input_tokens.count(**ask)
    assert counted.object == "response.input_tokens"
    resp = client.responses.create(**ask, max_output_tokens=4)
    assert resp.usage is not None and counted.input_tokens == resp.usage.input_tokens
    plain = client.responses.input_tokens.count(model=MODEL, input="What is the weather in Paris?")
    assert 0 < plain.input_tokens < counted.input_tokens  # the tools are in the prompt


# One slot (priced_models.toml): a request waits while another holds the engine.


def test_truncation_auto_drops_the_oldest_items(client: openai.OpenAI) -> None:
    said = [{"role": "user", "content": f"Note {i}: " + "lorem ipsum " * 40} for i in range(60)]
    said.append({"role": "user", "content": "Say hi."})
    with pytest.raises(openai.BadRequestError) as refused:  # "disabled", the default
        client.responses.create(model=MODEL, input=said, max_output_tokens=4)
    assert refused.value.code == "context_length_exceeded"
    resp = client.responses.create(model=MODEL, input=said, max_output_tokens=4, truncation="auto")
    assert resp.truncation == "auto" and resp.usage is not None
    assert resp.usage.input_tokens + 4 <= 4096

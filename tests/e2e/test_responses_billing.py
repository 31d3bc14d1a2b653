"""The Responses API is billed and limited exactly as chat completions: the same usage row and
cost for the same tokens, OpenAI's 402 and 429 envelopes, and a stream cut mid-way billed for
what was sent."""

from __future__ import annotations

import json

import httpx
import openai

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.e2e.test_responses_sdk import STORY, usage_rows


def test_usage_row_and_cost_equal_chat_completions(client: openai.OpenAI) -> None:
    chat = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": STORY}], max_tokens=8, temperature=0
    )
    resp = client.responses.with_raw_response.create(
        model=MODEL,
        input=[{"role": "user", "content": STORY}],
        max_output_tokens=8,
        temperature=0,
    )
    (chat_row,) = usage_rows(client, chat.headers["x-request-id"])
    (resp_row,) = usage_rows(client, resp.headers["x-request-id"])
    for field in ("model", "prompt_tokens", "completion_tokens", "cost_micro_credits", "status"):
        assert resp_row[field] == chat_row[field], field
    assert resp_row["cost_micro_credits"] > 0
    assert (resp_row["endpoint"], chat_row["endpoint"]) == ("responses", "chat.completions")
    assert resp.headers["x-tokendock-cost"] == chat.headers["x-tokendock-cost"]
    usage = resp.parse().usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens) == (
        resp_row["prompt_tokens"],
        resp_row["completion_tokens"],
    )
    assert resp_row["finish_reason"] == "length"


def test_stream_cut_midway_is_billed_for_what_was_sent(
    server: Server, client: openai.OpenAI
) -> None:
    ask = {"model": MODEL, "input": STORY, "max_output_tokens": 400, "stream": True}
    headers = {"Authorization": f"Bearer {server.key}"}
    deltas = 0
    with httpx.stream(
        "POST", server.v1 + "/responses", json=ask, headers=headers, timeout=60
    ) as reply:
        assert reply.status_code == 200
        request_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                deltas += event["type"] == "response.output_text.delta"
            if deltas == 5:
                break  # the client leaves
    (row,) = usage_rows(client, request_id)
    assert row["status"] == "client_disconnected"
    assert 5 <= row["completion_tokens"] < 400
    assert row["cost_micro_credits"] > 0

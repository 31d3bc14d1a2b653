"""POST /v1/messages and /v1/messages/count_tokens (Anthropic's Messages API) through the official
`anthropic` SDK against the real server and model: text, system, stop sequences, a tool-use
round trip, streams, token counts, Anthropic's errors — and billing equal to chat completions'.

Runs on a server whose catalog prices the model so every token shows in the bill
(tests/e2e/priced_models.toml: 2.5 µc per prompt token, 10 µc per completion token).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import BACKENDS, Server, start_server

CATALOG = Path(__file__).with_name("priced_models.toml")
# The SDK has no sampling arguments any more (newer models take none); TokenDock takes them.
GREEDY = {"temperature": 0}
SYSTEM = "You are a helpful assistant who answers briefly."
ASK = [{"role": "user", "content": "Tell me about whales."}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    },
}


def cost(prompt_tokens: int, completion_tokens: int) -> int:
    return -(-(prompt_tokens * 2_500_000 + completion_tokens * 10_000_000) // 1_000_000)


def prompt(usage: anthropic.types.Usage) -> int:
    """The whole prompt's tokens: Anthropic's input_tokens leave out those read from cache."""
    read, written = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    return usage.input_tokens + (read or 0) + (written or 0)


@pytest.fixture(scope="module", params=BACKENDS)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp(f"anthropic-{request.param}"),
        env={"TOKENDOCK_MODELS_FILE": str(CATALOG)},
        backend=request.param,
    )
    yield server
    server.stop()


def sdk(server: Server, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.base_url, api_key=key or server.key, max_retries=0, timeout=120
    )


@pytest.fixture(scope="module")
def client(srv: Server) -> anthropic.Anthropic:
    return sdk(srv)


def fresh_key(server: Server, grant: str = "5") -> str:
    return server.new_key(f"msg-{secrets.token_hex(4)}@example.com", grant)


def balance(server: Server, key: str) -> int:
    resp = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["balance_micro_credits"])


def row(server: Server, key: str, user: str) -> dict[str, Any]:
    for _ in range(50):
        resp = httpx.get(server.v1 + "/usage", headers={"Authorization": f"Bearer {key}"})
        rows = [r for r in resp.json()["data"] if r["user"] == user]
        if rows:
            return dict(rows[0])
        time.sleep(0.1)
    raise AssertionError(f"no usage row for {user}")


# -- messages.create ----------------------------------------------------------------------------


def test_text_with_system(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model=MODEL,
        max_tokens=12,
        system=SYSTEM,
        messages=ASK,
        extra_body=GREEDY,  # type: ignore[arg-type]
    )
    assert re.match(r"^msg_[0-9a-f]{24}$", msg.id)
    assert (msg.type, msg.role, msg.model) == ("message", "assistant", MODEL)
    assert len(msg.content) == 1 and msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.stop_sequence is None
    assert 1 <= msg.usage.output_tokens <= 12
    bare = client.messages.create(model=MODEL, max_tokens=1, messages=ASK)  # type: ignore[arg-type]
    assert prompt(msg.usage) > prompt(bare.usage) + 5  # the system prompt is read


def test_max_tokens_stop_reason(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=MODEL, max_tokens=4, messages=ASK, extra_body=GREEDY)  # type: ignore[arg-type]
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 4


def test_stop_sequences_cut_the_answer(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(model=MODEL, max_tokens=24, messages=ASK, extra_body=GREEDY)  # type: ignore[arg-type]
    text = whole.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 4, text
    stop = words[3]
    cut = client.messages.create(
        model=MODEL,
        max_tokens=24,
        messages=ASK,
        extra_body=GREEDY,
        stop_sequences=[stop],  # type: ignore[arg-type]
    )
    got = cut.content[0].text if cut.content else ""  # type: ignore[union-attr]
    assert got == text[: text.index(stop)]
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.usage.output_tokens < whole.usage.output_tokens


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(
        model=MODEL,
        max_tokens=120,
        messages=[ask],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    )
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    assert isinstance(call.input, dict) and isinstance(call.input["city"], str)
    history: list[Any] = [
        ask,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "18 C and sunny"}
            ],
        },
    ]
    second = client.messages.create(
        model=MODEL,
        max_tokens=20,
        messages=history,
        tools=[WEATHER],
        extra_body=GREEDY,  # type: ignore[list-item]
    )
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")
    # The call and its result are in the prompt, as the model reads them.
    counted = client.messages.count_tokens(model=MODEL, messages=history, tools=[WEATHER])  # type: ignore[list-item]
    assert prompt(second.usage) == counted.input_tokens > prompt(first.usage)


def test_x_api_key_and_anthropic_version(srv: Server) -> None:
    body = {"model": MODEL, "max_tokens": 2, "messages": ASK}
    headers = {"x-api-key": srv.key, "anthropic-version": "2023-06-01"}
    resp = httpx.post(srv.v1 + "/messages", json=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["type"] == "message"


# -- streams -------------------------------------------------------------------------------------


def test_stream_text_and_final_message(client: anthropic.Anthropic) -> None:
    plain = client.messages.create(
        model=MODEL,
        max_tokens=16,
        system=SYSTEM,
        messages=ASK,
        extra_body=GREEDY,  # type: ignore[arg-type]
    )
    with client.messages.stream(
        model=MODEL,
        max_tokens=16,
        system=SYSTEM,
        messages=ASK,
        extra_body=GREEDY,  # type: ignore[arg-type]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text  # type: ignore[union-attr]
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.id.startswith("msg_") and final.stop_reason == plain.stop_reason
    assert prompt(final.usage) == prompt(plain.usage)
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_stream_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=120,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "input_json" in kinds  # the SDK's event for input_json_delta
    assert final.stop_reason == "tool_use"
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.id.startswith("toolu_") and isinstance(call.input["city"], str)  # type: ignore[index]


def test_raw_stream_framing(srv: Server) -> None:
    body = {"model": MODEL, "max_tokens": 3, "messages": ASK, "stream": True}
    headers = {"x-api-key": srv.key}
    with httpx.stream("POST", srv.v1 + "/messages", json=body, headers=headers) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = resp.read().decode()
    names = re.findall(r"^event: (\w+)$", raw, re.M)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "[DONE]" not in raw


# -- count_tokens --------------------------------------------------------------------------------


def test_count_tokens_equals_billed_input(client: anthropic.Anthropic) -> None:
    counted = client.messages.count_tokens(
        model=MODEL,
        system=SYSTEM,
        messages=ASK,
        tools=[WEATHER],  # type: ignore[arg-type]
    )
    used = client.messages.create(
        model=MODEL,
        max_tokens=1,
        system=SYSTEM,
        messages=ASK,
        tools=[WEATHER],  # type: ignore[arg-type]
    )
    assert counted.input_tokens == prompt(used.usage)
    without_tools = client.messages.count_tokens(model=MODEL, system=SYSTEM, messages=ASK)  # type: ignore[arg-type]
    assert without_tools.input_tokens < counted.input_tokens


def test_count_tokens_is_free_and_authenticated(srv: Server) -> None:
    key = fresh_key(srv)
    before = balance(srv, key)
    assert sdk(srv, key).messages.count_tokens(model=MODEL, messages=ASK).input_tokens > 0  # type: ignore[arg-type]
    assert balance(srv, key) == before
    with pytest.raises(anthropic.AuthenticationError):
        sdk(srv, "td-" + "x" * 48).messages.count_tokens(model=MODEL, messages=ASK)  # type: ignore[arg-type]


# -- errors --------------------------------------------------------------------------------------


def error_of(exc: anthropic.APIStatusError) -> dict[str, Any]:
    assert exc.response.headers["x-request-id"].startswith("req_")
    body = exc.response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    return dict(body["error"])


def test_413_before_the_body_is_read(srv: Server) -> None:
    big = b"a" * (5 * 1024 * 1024)  # over the default 4 MiB limit
    resp = httpx.post(srv.v1 + "/messages", content=big, headers={"x-api-key": srv.key})
    assert resp.status_code == 413 and resp.headers["x-request-id"].startswith("req_")
    assert resp.json() == {
        "type": "error",
        "error": {"type": "request_too_large", "message": resp.json()["error"]["message"]},
    }


# -- billing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_billed_like_chat_completions(srv: Server, stream: bool) -> None:
    key = fresh_key(srv)
    users = {"chat": f"chat-{secrets.token_hex(3)}", "messages": f"msg-{secrets.token_hex(3)}"}
    chat = openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=0)
    start = balance(srv, key)
    chat.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM}, *ASK],  # type: ignore[list-item]
        max_tokens=8,
        temperature=0,
        user=users["chat"],
    )
    middle = balance(srv, key)
    kwargs: Any = {
        "model": MODEL,
        "max_tokens": 8,
        "system": SYSTEM,
        "messages": ASK,
        "extra_body": {"temperature": 0},
        "metadata": {"user_id": users["messages"]},
    }
    if stream:
        with sdk(srv, key).messages.stream(**kwargs) as s:
            usage = s.get_final_message().usage
    else:
        usage = sdk(srv, key).messages.create(**kwargs).usage
    end = balance(srv, key)
    chat_row, msg_row = row(srv, key, users["chat"]), row(srv, key, users["messages"])
    for name in ("prompt_tokens", "completion_tokens", "cost_micro_credits", "status"):
        assert msg_row[name] == chat_row[name], name
    assert (prompt(usage), usage.output_tokens) == (
        msg_row["prompt_tokens"],
        msg_row["completion_tokens"],
    )
    assert usage.cache_read_input_tokens == msg_row["cached_tokens"]
    # No cached_input price in this catalog: a cached prompt token costs the input price.
    assert start - middle == middle - end == cost(prompt(usage), usage.output_tokens)


def test_stream_cut_midway_pays_for_what_was_sent(srv: Server) -> None:
    key = fresh_key(srv)
    before = balance(srv, key)
    user = f"cut-{secrets.token_hex(3)}"
    body = {
        "model": MODEL,
        "max_tokens": 2000,
        "stream": True,
        "messages": [{"role": "user", "content": "Count from 1 to 5000, one number a line."}],
        "metadata": {"user_id": user},
    }
    received = 0
    with httpx.stream("POST", srv.v1 + "/messages", json=body, headers={"x-api-key": key}) as r:
        for line in r.iter_lines():
            received += '"text_delta"' in line
            if received >= 5:
                break
    got = row(srv, key, user)
    assert got["status"] == "client_disconnected"
    assert received <= got["completion_tokens"] < 2000
    assert got["cost_micro_credits"] == cost(got["prompt_tokens"], got["completion_tokens"])
    assert balance(srv, key) == before - got["cost_micro_credits"]

"""The HTTP layer in-process: `create_app` with a fake backend, driven by the official openai
SDK through httpx's ASGI transport — the wire adapters, headers and error envelopes, in
milliseconds and without a model or a server process."""

from __future__ import annotations

import openai
import orjson
import pytest

from tests.inprocess.conftest import App
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tokendock.errors import ContextLengthExceeded

MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "hi"}]


async def test_chat_completion_through_the_sdk(app: App) -> None:
    raw = await app.client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,  # type: ignore[arg-type]
    )
    done = raw.parse()
    assert done.choices[0].message.content == "Hello, world"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (PROMPT_TOKENS, 3)
    assert done.id.startswith("chatcmpl-") and done.model == MODEL
    # cost = 7 × 1 + 3 × 2 micro-credits at the fake model's price
    assert raw.headers["x-tokendock-cost"] == "0.000013"
    assert raw.headers["x-request-id"]


async def test_n_choices_and_text_completions(app: App) -> None:
    chat = await app.client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3)  # type: ignore[arg-type]
    assert [c.index for c in chat.choices] == [0, 1, 2]
    text = await app.client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=4)
    assert [c.text for c in text.choices] == ["Hello, world"] * 2
    assert text.object == "text_completion" and text.id.startswith("cmpl-")


async def test_streamed_chat_in_order_with_usage_and_cost(app: App) -> None:
    stream = await app.client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello, world"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes.count("stop") == 1 and finishes[-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 3
    assert getattr(usage, "cost", None) == "0.000013"  # TokenDock's addition


async def test_backend_refusal_is_an_envelope_and_releases_the_hold(app: App) -> None:
    app.backend.script = Script(begin_error=ContextLengthExceeded("too long", param="messages"))
    with pytest.raises(openai.BadRequestError) as info:
        await app.client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict) and info.value.body["param"] == "messages"
    balance = await app.http.get("/v1/credits", headers={"Authorization": f"Bearer {app.key}"})
    assert balance.status_code == 200
    assert orjson.loads(balance.content)["balance"] == "1.000000"  # nothing charged or held


async def test_unknown_model_and_bad_key(app: App) -> None:
    with pytest.raises(openai.NotFoundError):
        await app.client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    bad = openai.AsyncOpenAI(
        api_key="td-wrong", base_url="http://tokendock/v1", http_client=app.http, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]


async def test_idempotency_key_replays_on_both_endpoints(app: App) -> None:
    headers = {"Authorization": f"Bearer {app.key}", "Idempotency-Key": "one"}
    for path, body in (
        ("/v1/chat/completions", {"model": MODEL, "messages": MESSAGES}),
        ("/v1/completions", {"model": MODEL, "prompt": "x"}),
    ):
        headers["Idempotency-Key"] = path
        first = await app.http.post(path, json=body, headers=headers)
        again = await app.http.post(path, json=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content
    assert len(app.backend.runs) == 2  # each ran once


async def test_failure_mid_stream_is_an_error_event_without_the_server_text(app: App) -> None:
    secret = "segfault in ggml at 0xdeadbeef"
    app.backend.script = Script(fail_after=1, error_text=secret)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {app.key}"}
    resp = await app.http.post("/v1/chat/completions", json=body, headers=headers)
    assert resp.status_code == 200
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "server_error" and error["code"] == "generation_failed"
    assert secret not in resp.text
    assert orjson.loads(events[1])["choices"][0]["delta"]["content"] == "Hello"

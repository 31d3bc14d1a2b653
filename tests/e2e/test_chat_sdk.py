"""/v1/chat/completions through the official openai SDK against the real server and model."""

from __future__ import annotations

import itertools

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who loves books."}]


def test_non_streaming_shape_and_usage(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=12, temperature=0
    )
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    usage = resp.usage
    assert usage is not None
    assert usage.prompt_tokens > 5
    assert 1 <= usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_completion_tokens=5, temperature=0
    )
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 5


def test_streaming_without_usage(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=16, temperature=0
    )
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=16, temperature=0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    finishes = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[-1] is chunks[-1]
    assert all(c.usage is None for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content
    assert finishes[0].choices[0].finish_reason == plain.choices[0].finish_reason


def test_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_n_choices(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=6, n=2, temperature=1.0, seed=7
    )
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 12  # 6 each; usage counts every choice
    stream = client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        max_tokens=6,
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    openers = [c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.role]
    finished = [c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason]
    assert sorted(openers) == [0, 1]
    assert sorted(finished) == [0, 1]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def _deltas(client: openai.OpenAI, **kwargs: object) -> list[str]:
    stream = client.chat.completions.create(
        model=MODEL, messages=PROMPT, temperature=0, stream=True, **kwargs
    )
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


def _spanning_stop(deltas: list[str]) -> tuple[str, str]:
    """A stop string made of the end of one token and the start of the next, and the text
    before its first occurrence."""
    full = "".join(deltas)
    offset = 0
    for left, right in itertools.pairwise(deltas):
        offset += len(left)
        if len(left) >= 2 and len(right) >= 2 and offset > 4:
            stop = left[-2:] + right[:2]
            first = full.find(stop)
            if first == offset - 2:
                return stop, full[:first]
    raise AssertionError(f"no usable token boundary in {deltas!r}")


def test_stop_sequence_spanning_tokens(client: openai.OpenAI) -> None:
    deltas = _deltas(client, max_tokens=40)
    stop, expected = _spanning_stop(deltas)

    resp = client.chat.completions.create(
        model=MODEL, messages=PROMPT, temperature=0, max_tokens=40, stop=[stop, "\u2603never"]
    )
    assert resp.choices[0].message.content == expected
    assert resp.choices[0].finish_reason == "stop"

    streamed = client.chat.completions.create(
        model=MODEL, messages=PROMPT, temperature=0, max_tokens=40, stop=stop, stream=True
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert stop not in text
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_seed_reproducible(client: openai.OpenAI) -> None:
    def run(seed: int, temperature: float) -> str:
        resp = client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=20, temperature=temperature, seed=seed
        )
        return resp.choices[0].message.content or ""

    assert run(1, 0.0) == run(1, 0.0)
    assert run(1234, 1.0) == run(1234, 1.0)
    outs = {run(s, 1.0) for s in (1, 2, 3, 4)}
    assert len(outs) > 1, "different seeds at temperature 1 should not all agree"


def test_bad_request_is_sdk_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=PROMPT, temperature=2.5)
    assert exc.value.status_code == 400
    body = exc.value.body
    assert isinstance(body, dict) and body["param"] == "temperature"
    assert exc.value.response.headers["x-request-id"].startswith("req_")


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="no-such-model", messages=PROMPT)
    assert exc.value.code == "model_not_found"


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello " * 5000}], max_tokens=1
        )
    assert exc.value.code == "context_length_exceeded"
    assert "4096" in exc.value.message


def test_max_tokens_over_the_models_cap(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=100_000)
    assert isinstance(exc.value.body, dict) and exc.value.body["param"] == "max_tokens"
    assert "512" in exc.value.message


def test_unsupported_fields_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(
            model=MODEL, messages=PROMPT, prediction={"type": "content", "content": "x"}
        )
    assert isinstance(exc.value.body, dict) and exc.value.body["param"] == "prediction"


def test_extra_body_fields_are_ignored(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=2, extra_body={"some_vendor_field": {"x": 1}}
    )
    assert resp.usage is not None and resp.usage.completion_tokens >= 1


async def test_async_client(aclient: openai.AsyncOpenAI) -> None:
    resp = await aclient.chat.completions.create(
        model=MODEL, messages=PROMPT, max_tokens=8, temperature=0
    )
    assert resp.choices[0].message.content
    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    assert text == resp.choices[0].message.content
    assert usage is not None and resp.usage is not None
    assert usage.completion_tokens == resp.usage.completion_tokens
    with pytest.raises(openai.NotFoundError):
        await aclient.chat.completions.create(model="nope", messages=PROMPT)

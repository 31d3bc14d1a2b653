"""/v1/completions (legacy) and /v1/models through the official SDK."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database


def test_default_max_tokens_is_16(client: openai.OpenAI) -> None:
    resp = client.completions.create(
        model=MODEL, prompt="The history of the printing press", temperature=0
    )
    assert resp.object == "text_completion"
    assert resp.usage is not None
    assert resp.usage.completion_tokens <= 16
    if resp.choices[0].finish_reason == "length":
        assert resp.usage.completion_tokens == 16


def test_echo_and_prompt_list(client: openai.OpenAI) -> None:
    prompt = "Once upon a time"
    resp = client.completions.create(
        model=MODEL, prompt=[prompt, "In a galaxy"], max_tokens=4, echo=True, temperature=0
    )
    assert len(resp.choices) == 2
    assert resp.choices[0].text.startswith(prompt)
    assert resp.choices[1].text.startswith("In a galaxy")


def test_streaming_text_completion(client: openai.OpenAI) -> None:
    prompt = "The history of the printing press"
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    stream = client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]


def test_token_prompt(client: openai.OpenAI) -> None:
    resp = client.completions.create(model=MODEL, prompt=[2, 818, 5279], max_tokens=3)
    assert resp.usage is not None and resp.usage.prompt_tokens == 3


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")

"""Cached prompt tokens end to end above the engine: a backend's tally says 5 of the 7 prompt
tokens came from a KV cache, and every usage object on every wire says so — chat and text
completions (whole, streamed with include_usage, stored), Responses (whole, streamed, stored),
Anthropic Messages (input_tokens without the cached ones, cache_read_input_tokens), GET
/v1/usage — and the account pays the cached price for them.

Price (the fake model's catalog entry): input 1 credit/M (1 µc a token), cached input 0.25
credits/M, output 2 credits/M. 7 prompt tokens of which 5 cached + 3 completion tokens:
(2 × 1,000,000 + 5 × 250,000 + 3 × 2,000,000) / 1e6 = 9.25 → 10 µc (13 µc with no cache).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from tests.inprocess.conftest import GRANT, migrated, registry_of
from tests.inprocess.fake_backend import PROMPT_TOKENS, FakeBackend, Script
from tokendock.app import create_app
from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.config import Settings

MODEL = "fake-model"
MESSAGES: Any = [{"role": "user", "content": "hi"}]
CACHED = 5
COST = 10  # micro-credits, worked out in the module docstring
UNCACHED_COST = 13


class Site:
    def __init__(self, http: httpx.AsyncClient, http2: httpx2.AsyncClient, key: str):
        self.http = http
        self.key = key
        self.oai = openai.AsyncOpenAI(
            api_key=key, base_url="http://tokendock/v1", http_client=http, max_retries=0
        )
        self.claude = anthropic.AsyncAnthropic(  # this SDK runs on httpx2
            api_key=key, base_url="http://tokendock", http_client=http2, max_retries=0
        )

    async def balance(self) -> int:
        resp = await self.http.get("/v1/credits", headers={"Authorization": f"Bearer {self.key}"})
        return int(resp.json()["balance_micro_credits"])

    async def charged(self, work: Any) -> int:
        before = await self.balance()
        await work
        return before - await self.balance()


async def site_with(tmp_path: Path, cached: int) -> AsyncIterator[Site]:
    spec = ModelSpec(
        id=MODEL,
        package="fake-model-never-loaded",
        context_length=4096,
        max_output_tokens=256,
        price=PriceSpec(input="1", output="2", cached_input="0.25"),
    )
    backend = FakeBackend(spec, Script(cached=cached))
    settings = Settings(data_dir=tmp_path, database_url=await migrated(tmp_path), rate_tiers={})
    application = create_app(settings, registry_of(backend))
    services = application.state.services
    async with application.router.lifespan_context(application):
        account = await services.accounts.create_account(
            f"c-{secrets.token_hex(4)}@example.com", "pw-long-enough", grant=GRANT
        )
        new = await services.accounts.create_key(account, "test")
        transport = httpx.ASGITransport(app=application)
        transport2 = httpx2.ASGITransport(app=application)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://tokendock") as http,
            httpx2.AsyncClient(transport=transport2, base_url="http://tokendock") as http2,
        ):
            yield Site(http, http2, new.secret)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for one in site_with(tmp_path, CACHED):
        yield one


@pytest.fixture
async def uncached(tmp_path: Path) -> AsyncIterator[Site]:
    async for one in site_with(tmp_path, 0):
        yield one


async def test_chat_completion_shows_and_bills_cached_tokens(site: Site) -> None:
    raw = await site.oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=8
    )
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens == PROMPT_TOKENS
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == CACHED
    assert raw.headers["x-tokendock-cost"] == f"0.{COST:06d}"
    rows = await site.http.get("/v1/usage", headers={"Authorization": f"Bearer {site.key}"})
    row = rows.json()["data"][0]
    assert (row["prompt_tokens"], row["cached_tokens"]) == (PROMPT_TOKENS, CACHED)
    assert row["cost_micro_credits"] == COST


async def test_without_a_cache_hit_the_input_price_applies(uncached: Site) -> None:
    raw = await uncached.oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=8
    )
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert raw.headers["x-tokendock-cost"] == f"0.{UNCACHED_COST:06d}"


async def test_streamed_usage_chunks_carry_cached_tokens(site: Site) -> None:
    chat = await site.oai.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in chat]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == CACHED
    assert getattr(usage, "cost", None) == f"0.{COST:06d}"
    text = await site.oai.completions.create(
        model=MODEL, prompt="hi", stream=True, stream_options={"include_usage": True}
    )
    last = [c async for c in text][-1].usage
    assert last is not None and last.prompt_tokens_details is not None
    assert last.prompt_tokens_details.cached_tokens == CACHED


async def test_legacy_completion_shows_cached_tokens(site: Site) -> None:
    done = await site.oai.completions.create(model=MODEL, prompt="hi", max_tokens=4)
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == CACHED


async def test_stored_chat_completion_keeps_what_the_wire_showed(site: Site) -> None:
    made = await site.oai.chat.completions.create(model=MODEL, messages=MESSAGES, store=True)
    got = await site.oai.chat.completions.retrieve(made.id)
    assert got.usage == made.usage
    assert got.usage is not None and got.usage.prompt_tokens_details is not None
    assert got.usage.prompt_tokens_details.cached_tokens == CACHED


async def test_responses_whole_streamed_and_stored(site: Site) -> None:
    resp = await site.oai.responses.create(model=MODEL, input="hi", max_output_tokens=16)
    assert resp.usage is not None
    assert resp.usage.input_tokens == PROMPT_TOKENS
    assert resp.usage.input_tokens_details.cached_tokens == CACHED
    kept = await site.oai.responses.retrieve(resp.id)
    assert kept.usage == resp.usage
    stream = await site.oai.responses.create(model=MODEL, input="hi", stream=True)
    done = [e async for e in stream if e.type == "response.completed"]
    assert len(done) == 1 and done[0].response.usage is not None
    assert done[0].response.usage.input_tokens_details.cached_tokens == CACHED


async def test_messages_count_input_tokens_as_anthropic_does(site: Site) -> None:
    cost = await site.charged(
        site.claude.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    )
    assert cost == COST
    msg = await site.claude.messages.create(model=MODEL, max_tokens=8, messages=MESSAGES)
    # input_tokens: the prompt tokens NOT read from cache; the three add up to the prompt
    assert msg.usage.input_tokens == PROMPT_TOKENS - CACHED
    assert msg.usage.cache_read_input_tokens == CACHED
    assert msg.usage.cache_creation_input_tokens == 0
    assert msg.usage.output_tokens == 3
    async with site.claude.messages.stream(model=MODEL, max_tokens=8, messages=MESSAGES) as stream:
        final = await stream.get_final_message()
    assert final.usage.input_tokens == PROMPT_TOKENS - CACHED
    assert final.usage.cache_read_input_tokens == CACHED
    assert final.usage.cache_creation_input_tokens == 0


async def test_raw_message_stream_events(site: Site) -> None:
    body = {"model": MODEL, "max_tokens": 8, "messages": MESSAGES, "stream": True}
    resp = await site.http.post("/v1/messages", json=body, headers={"x-api-key": site.key})
    events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
    parsed = [orjson.loads(e) for e in events]
    start = next(p for p in parsed if p["type"] == "message_start")["message"]["usage"]
    delta = next(p for p in parsed if p["type"] == "message_delta")["usage"]
    # message_start: the whole prompt, the cache not known yet; message_delta: what was billed
    assert start == {
        "input_tokens": PROMPT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    assert delta == {
        "input_tokens": PROMPT_TOKENS - CACHED,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": CACHED,
        "output_tokens": 3,
    }

"""The embedded engine is fair between accounts: one account's big request cannot make another
account's small one wait for it."""

from __future__ import annotations

import asyncio
import secrets

import openai

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

# Gemma 3's <eos> and <end_of_turn>: forbidden, so every choice runs to max_tokens.
NEVER_STOP = {"1": -100, "106": -100}


async def test_a_small_request_is_served_while_a_big_one_runs(server: Server) -> None:
    key_a = server.new_key(f"big-{secrets.token_hex(4)}@example.com", "100")
    key_b = server.new_key(f"small-{secrets.token_hex(4)}@example.com", "100")
    a = openai.AsyncOpenAI(base_url=server.v1, api_key=key_a, max_retries=0, timeout=600)
    b = openai.AsyncOpenAI(base_url=server.v1, api_key=key_b, max_retries=0, timeout=600)
    messages = [{"role": "user", "content": "Tell me a very long story."}]

    big = await a.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        n=8,
        max_tokens=400,  # 3,200 tokens in all: many minutes on a busy CPU
        logit_bias=NEVER_STOP,
        stream=True,
    )
    finished: set[int] = set()
    started = asyncio.Event()

    async def read_big() -> None:
        async for chunk in big:
            for choice in chunk.choices:
                started.set()
                if choice.finish_reason is not None:
                    finished.add(choice.index)

    reader = asyncio.ensure_future(read_big())
    try:
        await asyncio.wait_for(started.wait(), 300)  # account A's request is generating
        small = await asyncio.wait_for(
            b.chat.completions.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=1,
            ),
            300,  # generous: one slice of A's first choice, then B's single token
        )
        assert small.usage is not None and small.usage.completion_tokens == 1
        assert not reader.done() and len(finished) < 8  # A's request is still running
    finally:
        reader.cancel()
        await big.close()

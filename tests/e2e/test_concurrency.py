"""Concurrent streams, a responsive event loop, and disconnects that free the engine."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

pytestmark = pytest.mark.any_database  # the engine and the wire, not the database

MESSAGES = [{"role": "user", "content": "Describe the sea in detail."}]


async def _stream_one(aclient: openai.AsyncOpenAI, i: int) -> tuple[str, str | None]:
    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        seed=i,  # type: ignore[arg-type]
    )
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


async def test_eight_streams_complete_and_health_stays_fast(
    aclient: openai.AsyncOpenAI, server: Server
) -> None:
    streams = asyncio.gather(*(_stream_one(aclient, i) for i in range(8)))
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        task = asyncio.ensure_future(streams)
        while not task.done():
            t0 = time.perf_counter()
            resp = await http.get("/health")
            latencies.append(time.perf_counter() - t0)
            assert resp.status_code == 200
            await asyncio.sleep(0.05)
        results = await task
    assert len(results) == 8
    assert all(finish in ("stop", "length") for _, finish in results)
    assert len(latencies) >= 5
    # Generation runs off the event loop: /health stays in the millisecond range.
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.5, latencies


async def test_disconnect_frees_engine(aclient: openai.AsyncOpenAI, server: Server) -> None:
    # A generation that would take far longer than the assertion window below.
    long = await aclient.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=500,
        stream=True,
        extra_body={"ignore": True},
    )
    received = 0
    async for chunk in long:
        if chunk.choices and chunk.choices[0].delta.content:
            received += 1
        if received >= 3:
            break
    await long.close()  # the client goes away mid-stream

    t0 = time.perf_counter()
    resp = await aclient.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=4,
        temperature=0,
    )
    elapsed = time.perf_counter() - t0
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert elapsed < 5, f"next request waited {elapsed:.1f}s: the abandoned stream kept running"


async def test_non_streaming_disconnect_frees_engine(server: Server) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 500, "temperature": 0}
    auth = {"Authorization": f"Bearer {server.key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=auth) as http:
        with contextlib.suppress(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body, timeout=1.0)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60, headers=auth) as http:
        resp = await http.post("/v1/chat/completions", json={**body, "max_tokens": 4})
    assert resp.status_code == 200
    assert time.perf_counter() - t0 < 5

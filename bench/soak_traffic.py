"""The soak's traffic: closed loops with think times, every request recorded.

Upstream workers (model `mock-chat`) pick, per request:

| kind | share | key | expected |
|---|---:|---|---|
| `up` | 45 % | a paying key | 200, non-streamed |
| `up_stream` | 25 % | a paying key | 200, streamed to `[DONE]` with a usage chunk |
| `up_disconnect` | 8 % | a paying key | a stream the client closes after three events |
| `broke` | 7 % | the zero-credit account's key | 402 |
| `limited` | 15 % | the key with a low RPM limit | 200 or 429 |

Embedded workers (the local model) send `emb` (45 %, non-streamed), `emb_stream` (40 %) and
`emb_disconnect` (15 %) with a paying key and 4-12 `max_tokens`. Think times: 20-80 ms
(upstream), 0.3-1.0 s (embedded). A request is bucketed by the time it was sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.harness import run_async

UPSTREAM_MIX = {"up": 45, "up_stream": 25, "up_disconnect": 8, "broke": 7, "limited": 15}
EMBEDDED_MIX = {"emb": 45, "emb_stream": 40, "emb_disconnect": 15}
UPSTREAM_THINK_S = (0.02, 0.08)
EMBEDDED_THINK_S = (0.3, 1.0)
DISCONNECT_AFTER = 3  # `data:` events read before the client hangs up
TIMEOUT_S = 120.0
WORDS = ["sea", "harbour", "lamp", "winter", "bread", "tram", "market", "river", "stone"]


@dataclass
class Keys:
    payers: list[str]
    broke: str
    limited: str


@dataclass
class Plan:
    base_url: str
    seconds: float
    upstream_workers: int
    embedded_workers: int
    upstream_model: str
    embedded_model: str


# one record per request: (sent at, s since t0; kind; status; latency s; outcome; detail)
Record = tuple[float, str, int, float, str, str]


def _body(model: str, rng: random.Random, stream: bool, max_tokens: int) -> dict[str, Any]:
    words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"Write about the {words}."}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


async def _plain(client: httpx.AsyncClient, key: str, body: dict[str, Any]) -> tuple[int, str]:
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    if resp.status_code == 200 and "usage" not in resp.json():
        return resp.status_code, "no usage in the response"
    return resp.status_code, "" if resp.status_code == 200 else resp.text[:200]


async def _stream(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], hang_up_after: int | None
) -> tuple[int, str]:
    """Status and a problem ('' when none; 'hung up' when the client closed it on purpose)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, resp.text[:200]
        events, done, usage, error = 0, False, False, ""
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            events += 1
            if hang_up_after is not None and events >= hang_up_after:
                return 200, "hung up"  # leaving the block closes the connection mid-stream
            if line == "data: [DONE]":
                done = True
            elif '"error"' in line[:20]:
                error = line[:200]
            elif '"usage":{' in line.replace(" ", ""):
                usage = True
        if error or not done or not usage:
            return 200, error or f"stream ended: [DONE] {done}, usage chunk {usage}"
        return 200, ""


async def one(
    client: httpx.AsyncClient, kind: str, keys: Keys, plan: Plan, rng: random.Random
) -> tuple[int, str, str]:
    """Send one request of `kind`: (status, outcome, detail)."""
    payer = rng.choice(keys.payers)
    if kind.startswith("emb"):
        model, max_tokens = plan.embedded_model, rng.randint(4, 12)
    else:
        model, max_tokens = plan.upstream_model, rng.randint(8, 32)
    streamed = kind.endswith(("_stream", "_disconnect"))
    body = _body(model, rng, streamed, max_tokens)
    if kind.endswith("_disconnect"):
        status, problem = await _stream(client, payer, body, DISCONNECT_AFTER)
        return status, "disconnected" if problem == "hung up" else "unexpected", problem
    if streamed:
        status, problem = await _stream(client, payer, body, None)
    else:
        key = {"broke": keys.broke, "limited": keys.limited}.get(kind, payer)
        status, problem = await _plain(client, key, body)
    if kind == "broke":
        return status, "refused_402" if status == 402 else "unexpected", problem
    if kind == "limited" and status == 429:
        return status, "refused_429", ""
    return status, "ok" if status == 200 and not problem else "unexpected", problem


async def worker(
    plan: Plan,
    keys: Keys,
    mix: dict[str, int],
    think: tuple[float, float],
    seed: int,
    t0: float,
    out: list[Record],
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    deadline = t0 + plan.seconds
    async with httpx.AsyncClient(base_url=plan.base_url, timeout=TIMEOUT_S, trust_env=False) as c:
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            sent = time.monotonic()
            try:
                status, outcome, detail = await one(c, kind, keys, plan, rng)
            except (httpx.HTTPError, ValueError) as exc:
                status, outcome, detail = 0, "unexpected", f"{type(exc).__name__}: {exc}"[:200]
            latency = time.monotonic() - sent
            out.append((round(sent - t0, 3), kind, status, latency, outcome, detail))
            await asyncio.sleep(rng.uniform(*think))


async def progress(out: list[Record], t0: float, every_s: float, seconds: float) -> None:
    shown = 0
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(every_s)
        recent = out[shown:]
        shown = len(out)
        ok = sorted(r[3] for r in recent if r[4] == "ok")
        bad = sum(r[4] == "unexpected" for r in recent)
        p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))] * 1000 if ok else float("nan")
        print(
            f"  {time.monotonic() - t0:6.0f} s: {len(recent)} requests, p99 {p99:.0f} ms, "
            f"unexpected {bad}",
            flush=True,
        )


async def _run(plan: Plan, keys: Keys, t0: float, progress_every: float) -> list[Record]:
    out: list[Record] = []
    tasks = [
        worker(plan, keys, UPSTREAM_MIX, UPSTREAM_THINK_S, i, t0, out)
        for i in range(plan.upstream_workers)
    ]
    tasks += [
        worker(plan, keys, EMBEDDED_MIX, EMBEDDED_THINK_S, 1000 + i, t0, out)
        for i in range(plan.embedded_workers)
    ]
    ticker = asyncio.ensure_future(progress(out, t0, progress_every, plan.seconds))
    try:
        await asyncio.gather(*tasks)
    finally:
        ticker.cancel()
    return sorted(out)


def run_traffic(plan: Plan, keys: Keys, t0: float, progress_every: float) -> list[Record]:
    return run_async(_run(plan, keys, t0, progress_every))

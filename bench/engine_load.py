"""Concurrent streams and prefix reuse against one OpenAI-compatible server over HTTP.

Works the same against TokenDock, llama.cpp's `llama-server` and `python -m llama_cpp.server`:
streamed `POST /v1/completions` with a raw text prompt (every server sees the same prompt
tokens), `temperature: 0`, `stream_options: {"include_usage": true}` (llama_cpp.server ignores
it), plus the fields a side adds to every request (`Client.extra`: `"ignore_eos": true` for
llama-server, so that each of its requests generates exactly `max_tokens`). The chat row sends
the same through `POST /v1/chat/completions` with one counting user message instead.

* Concurrency sweep: at concurrency C, C workers send requests back to back (closed loop) until
  the level's requests are done. Every request has its own counting prompt (greedy decoding keeps
  counting, so a request that is not cut short runs to `max_tokens`). A request is *complete* when
  it streamed without error, ended with finish_reason "length" and produced `max_tokens` tokens
  (usage.completion_tokens when the server sends usage, else the number of chunks that carried
  text: one per token on llama_cpp.server). Everything else is *cut short* (an HTTP error, an
  error chunk, a stream that ended early — llama_cpp.server ends a running stream with [DONE]
  when another request waits, its `interrupt_requests`).
  Aggregate tokens/s = completion tokens of all the level's requests / wall time (first request
  sent → last stream ended); TTFT = request sent → first chunk with text, p50 / p95 over the
  level's requests.
* Prefix reuse: a ~400-token shared "system prompt" (a new one per pair: a number up front),
  the first request cold, then a repeat with the same system prompt and another user message;
  TTFT of each and the cached prompt tokens the server reports (usage.prompt_tokens_details).

While streaming the client only timestamps lines; it parses them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.engine_single import PROSE, REQUEST_TIMEOUT, short_prompt

SYSTEM_REPEATS = 5  # PROSE is 68 tokens: with the header, a 400-token system prompt


@dataclass(slots=True)
class Outcome:
    start: float
    end: float
    first: float | None = None  # arrival of the first chunk with text
    tokens: int = 0
    finish: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first is None else (self.first - self.start) * 1000

    def complete(self, asked: int) -> bool:
        return self.error is None and self.finish == "length" and self.tokens >= asked


def parse(start: float, lines: list[tuple[float, str]], end: float) -> Outcome:
    out = Outcome(start, end)
    chunks = 0
    usage: dict[str, Any] = {}
    for stamp, line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        try:
            chunk = json.loads(line[len("data: ") :])
        except ValueError:
            out.error = f"bad chunk {line[:120]!r}"
            continue
        if "error" in chunk:
            out.error = f"error chunk: {str(chunk['error'])[:200]}"
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            if choice.get("text") or (choice.get("delta") or {}).get("content"):
                chunks += 1
                out.first = stamp if out.first is None else out.first
            out.finish = choice.get("finish_reason") or out.finish
    out.tokens = int(usage["completion_tokens"]) if usage else chunks
    if usage:
        out.prompt_tokens = int(usage.get("prompt_tokens", 0))
        details = usage.get("prompt_tokens_details") or {}
        out.cached_tokens = details.get("cached_tokens")
    return out


def counting_message(n: int) -> str:
    """The chat row's user message: greedy decoding answers it with a long run of numbers."""
    start = 101 + (37 * n) % 850
    return f"Count up from {start}, one number after another, separated by commas. Do not stop."


class Client:
    """One server: base URL, optional API key, the model name to send, and fields added to
    every request body (`extra`)."""

    def __init__(
        self, base_url: str, model: str, key: str | None = None, extra: dict[str, Any] | None = None
    ):
        self.base_url = base_url
        self.model = model
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.extra = extra or {}

    def session(self, connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            trust_env=False,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=connections + 2),
        )

    async def stream(
        self, http: httpx.AsyncClient, prompt: str, max_tokens: int, chat: bool = False
    ) -> Outcome:
        """One streamed request: `prompt` as a completions prompt, or (`chat`) as the one
        user message of a chat completion."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra,
        }
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        path = "/v1/chat/completions" if chat else "/v1/completions"
        lines: list[tuple[float, str]] = []
        start = time.perf_counter()
        try:
            async with http.stream("POST", path, json=body) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    text = resp.text[:200]
                    return Outcome(
                        start, time.perf_counter(), error=f"HTTP {resp.status_code}: {text}"
                    )
                async for line in resp.aiter_lines():
                    if line:
                        lines.append((time.perf_counter(), line))
        except httpx.HTTPError as exc:
            out = parse(start, lines, time.perf_counter())
            out.error = f"{type(exc).__name__}: {exc}"
            return out
        return parse(start, lines, time.perf_counter())


# -- concurrency sweep ----------------------------------------------------------------------


@dataclass(slots=True)
class Level:
    concurrency: int
    asked: int  # max_tokens of every request
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(o.complete(self.asked) for o in self.outcomes)

    @property
    def cut_short(self) -> int:
        return len(self.outcomes) - self.completed

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outcomes)

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else math.nan

    def ttft_ms(self, q: float) -> float:
        values = sorted(t for o in self.outcomes if (t := o.ttft_ms) is not None)
        return quantile(values, q)

    def errors(self) -> list[str]:
        return sorted({o.error for o in self.outcomes if o.error})


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (NaN for no values)."""
    if not values:
        return math.nan
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


async def run_level(
    client: Client,
    concurrency: int,
    requests: int,
    tokens: int,
    first_prompt: int,
    chat: bool = False,
) -> Level:
    """`requests` requests, `concurrency` of them in flight (closed loop), prompts numbered
    from `first_prompt` (counting prompts, or counting user messages when `chat`)."""
    todo = iter(range(first_prompt, first_prompt + requests))
    outcomes: list[Outcome] = []
    prompt = counting_message if chat else short_prompt

    async def worker(http: httpx.AsyncClient) -> None:
        for n in todo:  # one shared iterator: each prompt is sent once
            outcomes.append(await client.stream(http, prompt(n), tokens, chat))

    async with client.session(concurrency) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    end = max((o.end for o in outcomes), default=start)
    outcomes.sort(key=lambda o: o.start)
    return Level(concurrency, tokens, end - start, outcomes)


def level_line(level: Level) -> str:
    return (
        f"c={level.concurrency}: {level.aggregate_tps:.1f} tok/s aggregate, "
        f"{level.completed}/{len(level.outcomes)} complete, "
        f"TTFT p50 {level.ttft_ms(0.5):.0f} ms p95 {level.ttft_ms(0.95):.0f} ms"
    )


def warm_up(client: Client, tokens: int) -> None:
    """One request, not recorded (prompt 0: the levels' prompts start at 1)."""
    asyncio.run(run_level(client, 1, 1, tokens, 0))


def sweep(
    client: Client, levels: list[int], requests_for: dict[int, int], tokens: int, log: Any
) -> list[Level]:
    """Every level in turn, after one warm-up request (not recorded)."""
    warm_up(client, tokens)
    out: list[Level] = []
    first = 1
    for c in levels:
        level = asyncio.run(run_level(client, c, requests_for[c], tokens, first))
        first += requests_for[c]
        out.append(level)
        log(f"  {level_line(level)}")
    return out


# -- prefix reuse ---------------------------------------------------------------------------


def system_prompt(n: int, repeats: int = SYSTEM_REPEATS) -> str:
    return (
        f"System: you are assistant number {n} of the harbour town's tourist office. "
        "Answer briefly and politely, in plain words; when you do not know something, say "
        "so and point the visitor to the office on the market square, open every day from "
        "nine to five. What you know about the town:\n" + PROSE * repeats
    )


def user_turn(n: int) -> str:
    a = 10 + 7 * n
    return f"\n\nUser: count on from {a}, please.\nAssistant: {a}, {a + 1}, {a + 2},"


@dataclass(slots=True)
class PrefixPair:
    cold: Outcome
    repeat: Outcome

    @property
    def speedup(self) -> float:
        c, r = self.cold.ttft_ms, self.repeat.ttft_ms
        return c / r if c is not None and r else math.nan


async def _pairs(client: Client, pairs: int, tokens: int, repeats: int) -> list[PrefixPair]:
    out: list[PrefixPair] = []
    async with client.session(1) as http:
        for i in range(1, pairs + 1):
            system = system_prompt(i, repeats)
            cold = await client.stream(http, system + user_turn(2 * i), tokens)
            repeat = await client.stream(http, system + user_turn(2 * i + 1), tokens)
            out.append(PrefixPair(cold, repeat))
    return out


def prefix_pairs(
    client: Client, pairs: int, tokens: int, repeats: int = SYSTEM_REPEATS
) -> list[PrefixPair]:
    """`pairs` times: a new system prompt (PROSE × `repeats`) cold, then its repeat."""
    return asyncio.run(_pairs(client, pairs, tokens, repeats))


def median_ms(values: list[float | None]) -> float:
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else math.nan

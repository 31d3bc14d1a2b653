"""The load of bench/batch.py, all through the official `openai` SDK (AsyncOpenAI):

* `run_batch`: upload a JSONL file (`files.create(purpose="batch")`), `batches.create`, poll
  `batches.retrieve` every `POLL` seconds until the batch is in a final state, then read the
  output file (`files.content`) and sum its lines' usage. Wall time = `batches.create` called →
  the poll that saw the final state.
* `send_plain`: the same chat requests sent interactively (not streamed), `concurrency` workers
  back to back; tokens from each response's usage.
* `stream_loop`: streamed chat requests (`stream_options.include_usage`), `concurrency` workers
  back to back, until `count` requests were sent or `stop` is set; each one's TTFT (request
  sent → first chunk with text) and decode rate ((completion tokens − 1) / (last chunk − first
  chunk with text)).
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

POLL = 0.25  # seconds between batches.retrieve calls
FINAL = {"completed", "failed", "expired", "cancelled"}
SYSTEM = (
    "You are a concise assistant for a reference desk. Answer every question in one short, "
    "plain sentence, without lists, headings or preamble, and never ask a question back."
)
TOPICS = [
    "the moon", "volcanoes", "honey bees", "the Roman roads", "glaciers", "octopuses",
    "the printing press", "lighthouses", "coral reefs", "the violin", "salt", "owls",
    "the Sahara", "bamboo", "comets", "the compass", "penguins", "tea", "rainbows", "maps",
]  # fmt: skip
ASKS = [
    "What is one surprising fact about {t}?",
    "Why do people find {t} interesting?",
    "Describe {t} to a ten-year-old.",
    "What is the most common misconception about {t}?",
    "How would you explain {t} in a museum label?",
]


def chat_messages(i: int, mark: str = "") -> list[ChatCompletionMessageParam]:
    """Request `i` of the batch: the common system prompt (with `mark` in front) and a short
    question of its own."""
    ask = ASKS[(i // len(TOPICS)) % len(ASKS)].format(t=TOPICS[i % len(TOPICS)])
    return [
        {"role": "system", "content": f"{mark} {SYSTEM}".strip()},
        {"role": "user", "content": f"{ask} (Question {i + 1}.)"},
    ]


def counting_messages(i: int) -> list[ChatCompletionMessageParam]:
    """An interactive stream: greedy decoding answers it with numbers up to max_tokens."""
    start = 101 + (37 * i) % 850
    text = f"Count up from {start}, one number after another, separated by commas. Do not stop."
    return [{"role": "user", "content": text}]


def batch_file(n: int, model: str, max_tokens: int, mark: str = "") -> bytes:
    """A JSONL batch input of `n` chat requests (custom_id `req-<i>`), temperature 0."""
    out = io.StringIO()
    for i in range(n):
        body = {
            "model": model,
            "messages": chat_messages(i, mark),
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        line = {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions"}
        out.write(json.dumps({**line, "body": body}) + "\n")
    return out.getvalue().encode()


def client_for(base_url: str, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=600)


@dataclass
class BatchRun:
    lines: int
    status: str = ""
    started: float = 0.0  # monotonic: batches.create called
    ended: float = 0.0  # monotonic: the poll that saw the final state
    succeeded: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    cut: bool = False  # cancelled by the bench at its deadline

    @property
    def wall(self) -> float:
        return self.ended - self.started

    @property
    def lines_per_s(self) -> float:
        return self.succeeded / self.wall if self.wall > 0 else math.nan

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall if self.wall > 0 else math.nan


def read_output(run: BatchRun, text: str) -> None:
    """Count the output file's lines and sum the usage of those that succeeded."""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        response = line.get("response") or {}
        if response.get("status_code") != 200:
            run.failed += 1
            run.errors.append(str(line.get("error") or response.get("body"))[:200])
            continue
        run.succeeded += 1
        usage = (response.get("body") or {}).get("usage") or {}
        run.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        run.completion_tokens += int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        run.cached_tokens += int(details.get("cached_tokens") or 0)


async def run_batch(
    client: AsyncOpenAI,
    data: bytes,
    lines: int,
    running: asyncio.Event | None = None,
    deadline: float | None = None,
) -> BatchRun:
    """Upload `data`, run it as one batch, wait for its end and read its output. `running` is
    set when a poll sees the batch `in_progress` (or already over). A batch still running
    `deadline` seconds after its creation is cancelled (`batches.cancel`; its output then holds
    the lines done so far) so that a bench run stays bounded."""
    run = BatchRun(lines)
    upload = await client.files.create(file=("bench.jsonl", data), purpose="batch")
    run.started = time.monotonic()
    batch = await client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in FINAL:
        await asyncio.sleep(POLL)
        batch = await client.batches.retrieve(batch.id)
        if running is not None and batch.status != "validating":
            running.set()
        late = deadline is not None and time.monotonic() - run.started > deadline
        if late and not run.cut and batch.status in ("validating", "in_progress"):
            run.cut = True
            batch = await client.batches.cancel(batch.id)
    run.ended, run.status = time.monotonic(), batch.status
    if batch.output_file_id:
        read_output(run, (await client.files.content(batch.output_file_id)).text)
    if batch.error_file_id:
        errors = (await client.files.content(batch.error_file_id)).text.splitlines()
        run.failed += len([e for e in errors if e.strip()])
        run.errors += [e[:200] for e in errors[:3]]
    if batch.errors and batch.errors.data:
        run.errors += [str(e.message)[:200] for e in batch.errors.data[:3]]
    return run


@dataclass(slots=True)
class Request:
    start: float
    end: float = 0.0
    first: float | None = None
    tokens: int = 0
    error: str | None = None

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first is None else (self.first - self.start) * 1000

    @property
    def decode_tps(self) -> float | None:
        if self.first is None or self.tokens < 2 or self.end <= self.first:
            return None
        return (self.tokens - 1) / (self.end - self.first)


async def one_plain(client: AsyncOpenAI, model: str, i: int, max_tokens: int, mark: str) -> Request:
    req = Request(time.monotonic())
    try:
        reply = await client.chat.completions.create(
            model=model,
            messages=chat_messages(i, mark),
            max_tokens=max_tokens,
            temperature=0,
        )
        req.tokens = reply.usage.completion_tokens if reply.usage else 0
    except Exception as exc:  # a bench records what went wrong and goes on
        req.error = f"{type(exc).__name__}: {str(exc)[:160]}"
    req.end = time.monotonic()
    return req


async def one_stream(client: AsyncOpenAI, model: str, i: int, max_tokens: int) -> Request:
    req = Request(time.monotonic())
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=counting_messages(i),
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            now = time.monotonic()
            if chunk.usage is not None:
                req.tokens = chunk.usage.completion_tokens
            if any(c.delta.content for c in chunk.choices):
                req.first = req.first or now
                req.end = now
    except Exception as exc:  # a bench records what went wrong and goes on
        req.error = f"{type(exc).__name__}: {str(exc)[:160]}"
    req.end = req.end or time.monotonic()
    return req


async def closed_loop(
    concurrency: int,
    send: Callable[[int], Any],
    count: int | None = None,
    stop: asyncio.Event | None = None,
) -> list[Request]:
    """`concurrency` workers calling `send(i)` back to back for i = 0, 1, … until `count`
    requests were sent or `stop` is set (a request under way is finished)."""
    done: list[Request] = []
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while (count is None or next_i < count) and not (stop and stop.is_set()):
            i, next_i = next_i, next_i + 1
            done.append(await send(i))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def send_plain(
    client: AsyncOpenAI, model: str, count: int, concurrency: int, max_tokens: int, mark: str = ""
) -> list[Request]:
    return await closed_loop(
        concurrency, lambda i: one_plain(client, model, i, max_tokens, mark), count=count
    )


async def stream_loop(
    client: AsyncOpenAI,
    model: str,
    concurrency: int,
    max_tokens: int,
    count: int | None = None,
    stop: asyncio.Event | None = None,
) -> list[Request]:
    return await closed_loop(
        concurrency, lambda i: one_stream(client, model, i, max_tokens), count, stop
    )


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (nan for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]

"""The abuse bench's requests: what a row sends, and what it records of each answer.

A row's attack gets a `Ctx` (the server, the accounts by role, the sizes of this run) and
returns an `Outcome`: every answer's status, the tokens the answers said were delivered, the
cross-tenant cache hits it saw (prefix-cache rows) and a note for the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

MODEL = "gemma-3-270m"
NEVER_STOP = {"1": -100, "106": -100}  # Gemma 3's <eos> and <end_of_turn>: run to max_tokens


@dataclass
class Account:
    email: str
    account_id: int
    key_id: int
    key: str


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    delivered: int = 0  # completion tokens the answers reported (a stream's usage chunk)
    xhits: int | None = None  # prefix-cache rows: probes another account's cells answered
    notes: list[str] = field(default_factory=list)
    judged: dict[str, bool] = field(default_factory=dict)  # a row's own targets
    errors: Counter[str] = field(default_factory=Counter)  # "status code (param)" of refusals
    # Server errors that are the designed answer to this attack (the attacker's own 503
    # `engine_overloaded` past its share of the queue), not a failure of the server.
    expected: frozenset[str] = frozenset()

    def saw(self, status: int, body: Any = None) -> None:
        self.statuses[status] += 1
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            self.errors[f"{status} {err.get('code') or err.get('type')} ({err.get('param')})"] += 1
        if isinstance(body, dict):
            usage = body.get("usage") or {}
            self.delivered += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)

    def add(self, other: Outcome) -> None:
        """Another run of the same attack: its answers counted in, its checks all kept."""
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.delivered += other.delivered
        if other.xhits is not None:
            self.xhits = (self.xhits or 0) + other.xhits
        for name, ok in other.judged.items():
            self.judged[name] = self.judged.get(name, True) and ok

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def status_text(self) -> str:
        return ", ".join(f"{n}×{s or 'timeout'}" for s, n in sorted(self.statuses.items()))


@dataclass
class Ctx:
    base_url: str
    accounts: dict[str, Account]
    smoke: bool
    timeout: float
    http: httpx.AsyncClient
    shared: dict[str, Any] = field(default_factory=dict)  # state one row leaves for another
    disable: Any = None  # async callable(email): disables an account as an operator would

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.accounts[role].key}"}

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    async def send(
        self,
        role: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        method: str = "POST",
        out: Outcome | None = None,
        wait: float | None = None,
    ) -> tuple[int, Any]:
        """One request; (status, parsed JSON or None). Status 0: timed out (`wait`, else the
        run's request timeout) or cut."""
        content = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        headers = {**self.headers(role), "Content-Type": "application/json"}
        try:
            resp = await self.http.request(
                method, path, content=content, headers=headers, timeout=wait or self.timeout
            )
            status, parsed = resp.status_code, None
            with contextlib.suppress(ValueError):
                parsed = resp.json()
        except httpx.HTTPError:
            status, parsed = 0, None
        if out is not None:
            out.saw(status, parsed)
        return status, parsed

    async def stream(
        self,
        role: str,
        path: str,
        body: dict[str, Any],
        out: Outcome,
        *,
        until: asyncio.Event,
        rec: StreamRecord | None = None,
    ) -> StreamRecord:
        """An SSE stream read until it ends or `until` is set (then the client goes away);
        `rec.started` is set at its first generated text (or its end)."""
        rec = rec or StreamRecord()
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with self.http.stream(
                "POST", path, json=body, headers=self.headers(role), timeout=self.timeout
            ) as resp:
                rec.status = resp.status_code
                if resp.status_code != 200:
                    raw = await resp.aread()
                    with contextlib.suppress(ValueError):
                        err = orjson.loads(raw).get("error") or {}
                        kind = err.get("code") or err.get("type")
                        out.errors[f"{resp.status_code} {kind} ({err.get('param')})"] += 1
                    return rec
                lines = resp.aiter_lines()
                while not until.is_set():
                    reading = asyncio.ensure_future(anext(lines))
                    stop = asyncio.ensure_future(until.wait())
                    done, _ = await asyncio.wait(
                        {reading, stop}, return_when=asyncio.FIRST_COMPLETED
                    )
                    stop.cancel()
                    if reading not in done:
                        reading.cancel()
                        break
                    try:
                        line = reading.result()
                    except StopAsyncIteration:
                        break
                    rec.line(line)
                    if rec.events:
                        rec.started.set()
        except httpx.HTTPError:
            rec.status = rec.status or 0
        finally:
            out.statuses[rec.status] += 1
            out.delivered += rec.completion_tokens
            rec.ended = time.monotonic()
            rec.started.set()  # whoever waits for the first token stops waiting
        return rec


@dataclass
class StreamRecord:
    status: int = 0
    events: int = 0  # data events with generated text
    event_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    error: str = ""
    ended: float = 0.0
    started: asyncio.Event = field(default_factory=asyncio.Event)

    def line(self, line: str) -> None:
        if not line.startswith("data: {"):
            return
        item = orjson.loads(line[6:])
        if "error" in item:
            self.error = str(item["error"].get("code"))
        usage = item.get("usage") or {}
        self.completion_tokens = int(usage.get("completion_tokens") or self.completion_tokens)
        for choice in item.get("choices") or []:
            if (choice.get("delta") or {}).get("content") or choice.get("text"):
                self.events += 1
                self.event_times.append(time.monotonic())

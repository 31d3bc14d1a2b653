"""Servers measured side by side in one run: the same levels alternated between them.

With TokenDock and llama.cpp's `llama-server` both up (an idle server costs no CPU), each
concurrency level runs on one side, then on the other, before the next level: a change of load
on the machine during the run reaches both sides alike. Every side gets the same prompts at
each level (they are numbered from the same counter), one warm-up request first.

* `alternate_sweep`: the completions levels (a side may run only some of them);
* `chat_rows`: streamed `/v1/chat/completions` levels with counting user messages;
* `bursts`: burst stability: `count` bursts in a row in each (already busy) server process,
  alternating concurrency `big` (`big_requests` requests) and `small` (`small_requests`), and
  each burst's aggregate tokens/s; `stability()` compares the last burst of a concurrency with
  its first.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.engine_load import Client, Level, level_line, run_level, warm_up

if TYPE_CHECKING:
    from bench.engine_report import ServerRun

Log = Callable[[str], None]


@dataclass
class Side:
    run: ServerRun
    client: Client
    levels: list[int] = field(default_factory=list)  # the completions levels it runs


def _level(side: Side, c: int, requests: int, tokens: int, first: int, chat: bool) -> Level:
    return asyncio.run(run_level(side.client, c, requests, tokens, first, chat))


def alternate_sweep(
    sides: list[Side], requests_for: dict[int, int], tokens: int, log: Log, first: int = 1
) -> int:
    """Every side's levels, level by level, alternating sides (appended to `run.levels`);
    returns the next unused prompt number."""
    for side in sides:
        warm_up(side.client, tokens)
    for c in sorted({c for side in sides for c in side.levels}):
        for side in sides:
            if c in side.levels:
                level = _level(side, c, requests_for[c], tokens, first, chat=False)
                side.run.levels.append(level)
                log(f"  {side.run.name}: {level_line(level)}")
        first += requests_for[c]
    return first


def chat_rows(
    sides: list[Side], levels: list[int], requests_for: dict[int, int], tokens: int, log: Log
) -> None:
    """Streamed chat completions at each of `levels`, alternating sides (into `run.chat`)."""
    for side in sides:
        _level(side, 1, 1, tokens, 0, chat=True)  # warm-up: the chat template's first use
    first = 1
    for c in levels:
        for side in sides:
            level = _level(side, c, requests_for[c], tokens, first, chat=True)
            side.run.chat.append(level)
            log(f"  {side.run.name} chat: {level_line(level)}")
        first += requests_for[c]


@dataclass(frozen=True)
class BurstPlan:
    count: int = 10
    big: int = 16
    big_requests: int = 32
    small: int = 1
    small_requests: int = 4

    def schedule(self) -> list[tuple[int, int]]:
        """(concurrency, requests) of each burst: big, small, big, … `count` in all."""
        return [
            (self.big, self.big_requests) if i % 2 == 0 else (self.small, self.small_requests)
            for i in range(self.count)
        ]


def bursts(sides: list[Side], plan: BurstPlan, tokens: int, first: int, log: Log) -> int:
    """The plan's bursts, each on every side in turn (into `run.bursts`); the next prompt."""
    for i, (c, requests) in enumerate(plan.schedule(), start=1):
        for side in sides:
            level = _level(side, c, requests, tokens, first, chat=False)
            side.run.bursts.append(level)
            log(f"  {side.run.name} burst {i}/{plan.count}: {level_line(level)}")
        first += requests
    return first


@dataclass(frozen=True)
class Stability:
    concurrency: int
    bursts: int
    first_tps: float
    last_tps: float

    @property
    def ratio(self) -> float:
        return self.last_tps / self.first_tps if self.first_tps else math.nan


def stability(levels: list[Level], concurrency: int) -> Stability | None:
    """First and last burst at `concurrency` (None when there are fewer than two)."""
    runs = [lv for lv in levels if lv.concurrency == concurrency]
    if len(runs) < 2:
        return None
    return Stability(concurrency, len(runs), runs[0].aggregate_tps, runs[-1].aggregate_tps)

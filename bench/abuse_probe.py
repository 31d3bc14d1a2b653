"""What the abuse bench reads from the server while a row runs, and the canary.

* `Probe.read()`: the server process's CPU seconds (utime + stime of /proc/PID/stat, every
  thread), the engine threads' CPU seconds (/proc/PID/task/TID/stat of the threads found by
  `find_engine_threads`), VmRSS, the database's size (the SQLite file with its WAL, or
  `pg_database_size`) and the size of the server's log.
* The engine threads: Python 3.11 does not name native threads, so they are found by what they
  do — the threads (not the event loop's, which is the main one) whose CPU time grew by at least
  a quarter of the busiest one's during a plain generation: llama.cpp's scheduler thread
  (`llama:MODEL`, which calls llama_decode and picks tokens) and ggml's worker threads.
* `Canary`: another account sends a short chat completion every `every` seconds (at most
  `MAX_IN_FLIGHT` at once, so a frozen server is not buried); each one's start, latency and
  status is kept, and a row reads the ones that started inside its window.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.procs import CLK_TCK, cpu_ticks, status_kb, thread_ticks

MAX_IN_FLIGHT = 8
CANARY_TIMEOUT = 60.0


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of `pid`."""
    return {tid: ticks / CLK_TCK for tid, ticks in thread_ticks(pid).items()}


def find_engine_threads(pid: int, before: dict[int, float], after: dict[int, float]) -> set[int]:
    grew = {t: after[t] - before.get(t, 0.0) for t in after if t != pid}
    top = max(grew.values(), default=0.0)
    return {t for t, d in grew.items() if top > 0 and d >= top / 4}


@dataclass
class Reading:
    cpu: float  # the whole process, seconds
    engine: float  # the engine threads, seconds
    rss_mb: float
    db_bytes: int
    log_bytes: int


@dataclass
class Probe:
    pid: int
    db_file: Path | None  # SQLite
    pg_url: str | None  # PostgreSQL: postgresql://… of the server's database
    log_file: Path
    engine_tids: set[int] = field(default_factory=set)

    async def read(self) -> Reading:
        return await self.db_size(self.process())

    def process(self) -> Reading:
        """/proc is memory: reading it does not block the loop."""
        cpu = cpu_ticks(self.pid) / CLK_TCK
        threads = thread_cpu(self.pid)
        engine = sum(threads.get(t, 0.0) for t in self.engine_tids)
        rss = status_kb(self.pid, "VmRSS") / 1024
        return Reading(cpu, engine, rss, 0, self.log_file.stat().st_size)

    async def db_size(self, reading: Reading) -> Reading:
        reading.db_bytes = await self._db_bytes()
        return reading

    async def _db_bytes(self) -> int:
        if self.pg_url is not None:
            import asyncpg  # type: ignore[import-untyped]

            conn = await asyncpg.connect(self.pg_url)
            try:
                return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            finally:
                await conn.close()
        assert self.db_file is not None
        files = [self.db_file, self.db_file.with_name(self.db_file.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())


@dataclass
class Shot:
    started: float  # monotonic
    latency: float
    status: int  # 0: transport error or timeout


@dataclass
class Canary:
    base_url: str
    key: str
    model: str
    every: float = 0.5
    shots: list[Shot] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _pending: set[asyncio.Task[None]] = field(default_factory=set)

    def body(self) -> dict[str, Any]:
        ask = [{"role": "user", "content": "Say OK."}]
        return {"model": self.model, "messages": ask, "max_tokens": 4, "temperature": 0}

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._pending, return_exceptions=True)

    async def _loop(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT * 2)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=CANARY_TIMEOUT, limits=limits
        ) as http:
            while True:
                if len(self._pending) < MAX_IN_FLIGHT:
                    task = asyncio.ensure_future(self._one(http))
                    self._pending.add(task)
                    task.add_done_callback(self._pending.discard)
                await asyncio.sleep(self.every)

    async def _one(self, http: httpx.AsyncClient) -> None:
        started = time.monotonic()
        try:
            resp = await http.post("/v1/chat/completions", json=self.body())
            status = resp.status_code
        except httpx.HTTPError:
            status = 0
        self.shots.append(Shot(started, time.monotonic() - started, status))

    async def settle(self) -> None:
        """Wait for the requests in flight (those a row started) to end."""
        pending = list(self._pending)
        if pending:
            await asyncio.wait(pending, timeout=CANARY_TIMEOUT)

    def window(self, start: float, end: float) -> list[Shot]:
        return [s for s in self.shots if start <= s.started < end]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]

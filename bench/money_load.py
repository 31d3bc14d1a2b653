"""The load of bench/money.py: accounts and keys on a fresh database, then `concurrency` tasks
that each loop admission (authenticate + hold) and settlement (settle with a usage row) through
TokenDock's own classes for a measured window after a warm-up, and the ledger's checks after.
"""

from __future__ import annotations

import asyncio
import random
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import machine_jiffies
from tokendock.app import QUIET_REQUESTS
from tokendock.billing.ledger import Ledger, Settlement, UsageRow
from tokendock.billing.load import FewInFlight, InFlight
from tokendock.billing.pricing import Price
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade_async
from tokendock.storage.tables import usage_records

GRANT = 10**15  # micro-credits per account: never the limiting factor
PRICE = Price.parse("0.15", "0.60")  # credits per million tokens, as in the pricing docstring
PROMPT_TOKENS = 200
MAX_TOKENS = 512  # the hold covers prompt + max_tokens; the settlement charges fewer
MODEL = "bench-model"
WARMUP_SECONDS = 1.0
DRAIN_TIMEOUT = 60.0  # after the measured window, in-flight requests must finish within this


@dataclass(slots=True)
class Backend:
    name: str  # "sqlite" or "postgresql"
    url: str
    engine: AsyncEngine
    ledger: Ledger
    service: AccountService
    account_ids: list[int]
    secrets: list[str]  # one key per account, same order
    active: InFlight  # requests in flight (the ledger's load signal reads it)
    completed: int = 0  # requests settled so far, all runs and warm-ups included
    charged: int = 0  # Σ of every settled charge


async def open_backend(name: str, url: str, n_accounts: int) -> Backend:
    await upgrade_async(url)
    engine = create_engine(url)
    # As the server wires it: SQLite jobs run inline while few requests are in flight.
    active = InFlight()
    ledger = Ledger(
        engine,
        owner="bench",
        hold_ttl=timedelta(hours=1),
        load=FewInFlight(active, QUIET_REQUESTS),
    )
    service = AccountService(AccountStore(engine), ledger, cache_seconds=1.0)
    account_ids: list[int] = []
    keys: list[str] = []
    for i in range(n_accounts):
        account_id = await service.create_account(
            f"bench{i}@example.com", "bench-password", grant=GRANT
        )
        account_ids.append(account_id)
        keys.append((await service.create_key(account_id, "bench")).secret)
    return Backend(name, url, engine, ledger, service, account_ids, keys, active)


@dataclass(slots=True)
class RunResult:
    backend: str
    concurrency: int
    accounts: int
    seconds: float
    completed_in_window: int  # settled inside the measured window (÷ seconds = requests/s)
    completed_total: int  # warm-up and the requests still in flight at the end included
    errors: dict[str, int]
    admission_ms: list[float] = field(repr=False)
    settlement_ms: list[float] = field(repr=False)
    added_ms: list[float] = field(repr=False)
    process_cpu_pct: float  # this process, all threads, during the measured window
    machine_busy_pct: float  # all CPUs (database server included), during the window
    loadavg_after: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    jobs_per_commit: float | None = None  # SQLite writer thread: mean ledger jobs per COMMIT

    @property
    def rps(self) -> float:
        return self.completed_in_window / self.seconds


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Tally:
    """What the workers of one run counted; a request counts for latency only when it lies
    wholly inside the measured window [start, end], for throughput when it ended inside it."""

    start: float
    end: float
    completed: int = 0
    in_window: int = 0
    charged: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    admission: list[float] = field(default_factory=list)
    settlement: list[float] = field(default_factory=list)
    added: list[float] = field(default_factory=list)

    def record(self, t0: float, t1: float, t2: float, charged: int) -> None:
        self.completed += 1
        self.charged += charged
        if self.start <= t2 <= self.end:
            self.in_window += 1
        if t0 >= self.start and t2 <= self.end:
            self.admission.append((t1 - t0) * 1000)
            self.settlement.append((t2 - t1) * 1000)
            self.added.append((t2 - t0) * 1000)


async def one_request(
    b: Backend, header: str, request_id: str, rng: random.Random, t0: float
) -> tuple[float, Settlement | None]:
    """Admission and settlement of one request as a chat completion does them: (the time the
    hold was taken, what the settlement returned)."""
    b.active.active += 1
    try:
        key = await b.service.authenticate(header)
        worst = PRICE.cost(PROMPT_TOKENS, MAX_TOKENS)
        hold = await b.ledger.hold(key.account_id, key.id, worst, request_id)
        t1 = time.perf_counter()
        completion = rng.randrange(1, MAX_TOKENS)  # < max_tokens: part is released
        usage = UsageRow(
            request_id=request_id,
            model=MODEL,
            prompt_tokens=PROMPT_TOKENS,
            completion_tokens=completion,
            status="ok",
            finish_reason="length",
            latency_ms=int((t1 - t0) * 1000),
            ttft_ms=None,
            user=None,
        )
        return t1, await b.ledger.settle(hold, PRICE.cost(PROMPT_TOKENS, completion), usage)
    finally:
        b.active.active -= 1


async def worker(b: Backend, index: int, label: str, tally: Tally) -> None:
    """Requests back to back until the window ends, on key `index` (round-robin)."""
    header = "Bearer " + b.secrets[index % len(b.secrets)]
    rng = random.Random(index)
    n = 0
    while (t0 := time.perf_counter()) < tally.end:
        n += 1
        try:
            t1, settled = await one_request(b, header, f"{label}-{index}-{n}", rng, t0)
        except Exception as exc:  # counted and reported; the checks show the damage
            tally.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            await asyncio.sleep(0.01)
            continue
        if settled is None:
            tally.errors["settle returned None"] += 1
            continue
        tally.record(t0, t1, time.perf_counter(), settled.charged)


async def monitor(start: float, end: float) -> tuple[float, float]:
    """CPU % of this process and of the whole machine over the measured window."""
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    cpu0, (busy0, total0), wall0 = _process_cpu(), machine_jiffies(), time.perf_counter()
    await asyncio.sleep(max(0.0, end - time.perf_counter()))
    cpu1, (busy1, total1), wall1 = _process_cpu(), machine_jiffies(), time.perf_counter()
    process = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
    machine = 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    return process, machine


async def run_load(b: Backend, concurrency: int, seconds: float, label: str) -> RunResult:
    """`concurrency` workers for a warm-up and `seconds` measured; every task is awaited (or
    cancelled after DRAIN_TIMEOUT) before the result is returned."""
    start = time.perf_counter() + WARMUP_SECONDS
    tally = Tally(start, start + seconds)
    watch = asyncio.create_task(monitor(tally.start, tally.end))
    tasks = [asyncio.create_task(worker(b, i, label, tally)) for i in range(concurrency)]
    try:
        done, pending = await asyncio.wait(tasks, timeout=WARMUP_SECONDS + seconds + DRAIN_TIMEOUT)
    except asyncio.CancelledError:  # SIGTERM / Ctrl-C: stop the load before cleaning up
        for task in [*tasks, watch]:
            task.cancel()
        await asyncio.gather(*tasks, watch, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        tally.errors[f"still running {DRAIN_TIMEOUT:.0f} s after the end (cancelled)"] += len(
            pending
        )
    for task in done:
        if task.exception() is not None:
            tally.errors[f"worker crashed: {task.exception()!r}"] += 1
    process_pct, machine_pct = await watch
    b.completed += tally.completed
    b.charged += tally.charged
    return RunResult(
        backend=b.name,
        concurrency=concurrency,
        accounts=len(b.account_ids),
        seconds=seconds,
        completed_in_window=tally.in_window,
        completed_total=tally.completed,
        errors=dict(tally.errors),
        admission_ms=tally.admission,
        settlement_ms=tally.settlement,
        added_ms=tally.added,
        process_cpu_pct=process_pct,
        machine_busy_pct=machine_pct,
    )


async def usage_rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        query = select(func.count()).select_from(usage_records)
        return int((await conn.execute(query)).scalar_one())


async def check(b: Backend) -> dict[str, Any]:
    """The ledger after everything so far: consistent, nothing open, nothing lost."""
    problems = await b.ledger.verify()
    open_holds = await b.ledger.open_holds()
    rows = await usage_rows(b.engine)
    balances = [await b.ledger.balance(a) for a in b.account_ids]
    expected_balance = GRANT * len(b.account_ids) - b.charged
    return {
        "verify": problems[:5],
        "verify_ok": problems == [],
        "open_holds": open_holds,
        "open_holds_ok": open_holds == 0,
        "usage_rows": rows,
        "completed": b.completed,
        "usage_rows_ok": rows == b.completed,
        "balance_total": sum(balances),
        "balance_expected": expected_balance,
        "balance_ok": sum(balances) == expected_balance,
        "ok": problems == []
        and open_holds == 0
        and rows == b.completed
        and sum(balances) == expected_balance,
    }

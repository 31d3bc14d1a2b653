"""Money path: what TokenDock's credit ledger adds around every completion, on both databases.

Each simulated request does exactly what a chat completion does around generation, through
TokenDock's own classes (no HTTP, no model):

* admission  — `AccountService.authenticate("Bearer …")` (in-memory key cache, 1 s) and
  `Ledger.hold(account, key, worst case, request_id)`;
* settlement — `Ledger.settle(hold, actual, UsageRow(…))` with actual < worst case, so every
  request also writes a release entry.

`--concurrency` asyncio tasks loop over that for `--seconds` (after a 1 s warm-up that is not
counted) on a fresh SQLite file and on a fresh PostgreSQL database, against `--accounts`
accounts (each with a large grant and one key; tasks are spread round-robin over them). A
second run with one task gives the uncontended latency. After every run the ledger must be
consistent: `verify() == []`, no open holds, one usage row per completed request, and the
balances equal the grants minus everything charged.

`hold` and `settle` are one call each into the ledger's fast path (billing/fastpath.py): on
SQLite a job for its writer thread (several queued jobs share a COMMIT; the script reports the
mean jobs per COMMIT), on PostgreSQL one `td_hold` / `td_settle` function call. The per-request
count at the end shows those calls next to what still goes through SQLAlchemy.

Run from the repository root: `.venv/bin/python -m bench.money [--concurrency 64] [--seconds 10]`
(`--smoke`: a few seconds, the same checks, no targets judged).
Exit status: 0 when every integrity check passed (targets are reported, PASS or FAIL), 1 when
one failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import machine_jiffies
from tokendock.app import QUIET_REQUESTS
from tokendock.billing.fastpath_sqlite import SqliteWriter
from tokendock.billing.ledger import Ledger, UsageRow
from tokendock.billing.load import FewInFlight, InFlight
from tokendock.billing.pricing import Price
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade_async
from tokendock.storage.tables import usage_records

DEFAULT_PG_URL = "postgresql+asyncpg://tokendock:tokendock@127.0.0.1:5432/postgres"
TARGET_RPS = {"sqlite": 1500.0, "postgresql": 1000.0}
TARGET_P50_MS = 0.5
GRANT = 10**15  # micro-credits per account: never the limiting factor
PRICE = Price.parse("0.15", "0.60")  # credits per million tokens, as in the pricing docstring
PROMPT_TOKENS = 200
MAX_TOKENS = 512  # the hold covers prompt + max_tokens; the settlement charges fewer
MODEL = "bench-model"
WARMUP_SECONDS = 1.0
DRAIN_TIMEOUT = 60.0  # after the measured window, in-flight requests must finish within this
STATEMENT_SAMPLE = 50  # sequential requests for the statements-per-request count


# -- one backend ---------------------------------------------------------------------------


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


# -- the load ------------------------------------------------------------------------------


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


async def run_load(b: Backend, concurrency: int, seconds: float, label: str) -> RunResult:
    worst = PRICE.cost(PROMPT_TOKENS, MAX_TOKENS)
    headers = ["Bearer " + s for s in b.secrets]
    admission: list[float] = []
    settlement: list[float] = []
    added: list[float] = []
    errors: Counter[str] = Counter()
    completed = 0
    in_window = 0
    charged = 0
    start = time.perf_counter() + WARMUP_SECONDS
    end = start + seconds

    async def worker(index: int) -> None:
        nonlocal completed, in_window, charged
        header = headers[index % len(headers)]
        rng = random.Random(index)
        n = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                return
            n += 1
            request_id = f"{label}-{index}-{n}"
            b.active.active += 1
            try:
                key = await b.service.authenticate(header)
                hold = await b.ledger.hold(key.account_id, key.id, worst, request_id)
                t1 = time.perf_counter()
                completion = rng.randrange(1, MAX_TOKENS)  # < max_tokens: part is released
                actual = PRICE.cost(PROMPT_TOKENS, completion)
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
                settled = await b.ledger.settle(hold, actual, usage)
                t2 = time.perf_counter()
            except Exception as exc:  # counted and reported; the checks show the damage
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                await asyncio.sleep(0.01)
                continue
            finally:
                b.active.active -= 1
            if settled is None:
                errors["settle returned None"] += 1
                continue
            completed += 1
            charged += settled.charged
            if start <= t2 <= end:  # throughput: completions inside the measured window
                in_window += 1
            if t0 >= start and t2 <= end:  # latency: requests wholly inside the window
                admission.append((t1 - t0) * 1000)
                settlement.append((t2 - t1) * 1000)
                added.append((t2 - t0) * 1000)

    async def monitor() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu0, (busy0, total0), wall0 = _process_cpu(), machine_jiffies(), time.perf_counter()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        cpu1, (busy1, total1), wall1 = _process_cpu(), machine_jiffies(), time.perf_counter()
        process = 100.0 * (cpu1 - cpu0) / (wall1 - wall0)
        machine = 100.0 * (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
        return process, machine

    watch = asyncio.create_task(monitor())
    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
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
        errors[f"still running {DRAIN_TIMEOUT:.0f} s after the end (cancelled)"] += len(pending)
    for task in done:
        if task.exception() is not None:
            errors[f"worker crashed: {task.exception()!r}"] += 1
    process_pct, machine_pct = await watch
    b.completed += completed
    b.charged += charged
    return RunResult(
        backend=b.name,
        concurrency=concurrency,
        accounts=len(b.account_ids),
        seconds=seconds,
        completed_in_window=in_window,
        completed_total=completed,
        errors=dict(errors),
        admission_ms=admission,
        settlement_ms=settlement,
        added_ms=added,
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


# -- statements per request ----------------------------------------------------------------


@contextlib.contextmanager
def counting(
    engine: AsyncEngine, ledger: Ledger, counts: Counter[str], phase: list[str]
) -> Iterator[None]:
    """Count SQL statements, COMMITs and (SQLite) aiosqlite thread round trips through
    SQLAlchemy, and calls into the ledger's fast path, per phase."""

    def on_execute(*_args: Any) -> None:
        counts[phase[0] + ":statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts[phase[0] + ":commits"] += 1

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    patched: tuple[Any, Any] | None = None
    if engine.dialect.name == "sqlite":
        import aiosqlite.core

        original: Any = aiosqlite.core.Connection._execute

        async def hop(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            counts[phase[0] + ":thread_hops"] += 1
            return await original(self, fn, *args, **kwargs)

        aiosqlite.core.Connection._execute = hop  # type: ignore[method-assign]  # counting
        patched = (aiosqlite.core.Connection, original)
    fast: Any = ledger.fastpath
    originals = {name: getattr(fast, name) for name in ("hold", "settle")}

    def counted(name: str) -> Any:
        async def call(*args: Any) -> Any:
            counts[phase[0] + ":fastpath_calls"] += 1
            return await originals[name](*args)

        return call

    for name in originals:
        setattr(fast, name, counted(name))

    def on_sqlite(statement: str) -> None:  # what the SQLite writer's connection runs
        counts[phase[0] + ":fastpath_sql"] += 1
        if statement.startswith("COMMIT"):
            counts[phase[0] + ":fastpath_commits"] += 1

    traced = isinstance(fast, SqliteWriter) and fast.trace(on_sqlite)
    try:
        yield
    finally:
        if traced:
            fast.trace(None)
        for name in originals:
            delattr(fast, name)
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_commit)
        if patched is not None:
            patched[0]._execute = patched[1]


async def statements_per_request(b: Backend) -> dict[str, float]:
    """Sequential requests with a warm key cache: what one admission and one settlement send."""
    worst = PRICE.cost(PROMPT_TOKENS, MAX_TOKENS)
    header = "Bearer " + b.secrets[0]
    await b.service.authenticate(header)  # warm the cache: the steady state
    counts: Counter[str] = Counter()
    phase = ["admission"]
    with counting(b.engine, b.ledger, counts, phase):
        for n in range(STATEMENT_SAMPLE):
            phase[0] = "admission"
            key = await b.service.authenticate(header)
            hold = await b.ledger.hold(key.account_id, key.id, worst, f"stmt-{n}")
            phase[0] = "settlement"
            actual = PRICE.cost(PROMPT_TOKENS, 100)
            usage = UsageRow(f"stmt-{n}", MODEL, PROMPT_TOKENS, 100, "ok", "stop", 1, None, None)
            settled = await b.ledger.settle(hold, actual, usage)
            assert settled is not None
            b.completed += 1
            b.charged += settled.charged
    return {k: v / STATEMENT_SAMPLE for k, v in sorted(counts.items())}


# -- reporting -----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else float("nan"),
        "mean": sum(values) / len(values) if values else float("nan"),
    }


def summary(r: RunResult) -> dict[str, Any]:
    return {
        "backend": r.backend,
        "concurrency": r.concurrency,
        "accounts": r.accounts,
        "seconds": r.seconds,
        "requests_per_s": r.rps,
        "completed_in_window": r.completed_in_window,
        "completed_total": r.completed_total,
        "errors": r.errors,
        "admission_ms": stats(r.admission_ms),
        "settlement_ms": stats(r.settlement_ms),
        "added_ms": stats(r.added_ms),
        "process_cpu_pct": r.process_cpu_pct,
        "machine_busy_pct": r.machine_busy_pct,
        "loadavg_after": r.loadavg_after,
        "jobs_per_commit": r.jobs_per_commit,
        "checks": r.checks,
    }


def markdown_table(runs: list[dict[str, Any]]) -> str:
    def pair(s: dict[str, float]) -> str:
        return f"{s['p50']:.2f} / {s['p99']:.2f}"

    lines = [
        "| backend | tasks | accounts | requests/s | admission p50 / p99 (ms) | "
        "settlement p50 / p99 (ms) | added p50 / p99 (ms) | CPU: bench / machine | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['backend']} | {r['concurrency']} | {r['accounts']} | "
            f"{r['requests_per_s']:,.0f} | {pair(r['admission_ms'])} | "
            f"{pair(r['settlement_ms'])} | {pair(r['added_ms'])} | "
            f"{r['process_cpu_pct']:.0f} % / {r['machine_busy_pct']:.0f} % | "
            f"{sum(r['errors'].values())} |"
        )
    return "\n".join(lines)


def verdicts(runs: list[dict[str, Any]], concurrency: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for backend, target in TARGET_RPS.items():
        loaded = [r for r in runs if r["backend"] == backend and r["concurrency"] == concurrency]
        single = [r for r in runs if r["backend"] == backend and r["concurrency"] == 1]
        if loaded:
            rps = loaded[0]["requests_per_s"]
            out.append(
                {
                    "target": f"{backend}: ≥ {target:,.0f} requests/s at {concurrency} tasks",
                    "value": f"{rps:,.0f} requests/s",
                    "pass": rps >= target,
                }
            )
        # Latency is a target uncontended only: with N tasks in a closed loop the p50 is about
        # N / throughput (Little's law), 64 / 2,000 requests/s = 32 ms, whatever the ledger does.
        if single:
            p50 = single[0]["added_ms"]["p50"]
            out.append(
                {
                    "target": f"{backend}: p50 added < {TARGET_P50_MS} ms, uncontended (1 task)",
                    "value": f"{p50:.3f} ms",
                    "pass": p50 < TARGET_P50_MS,
                }
            )
    return out


def statements_text(counts: dict[str, float]) -> str:
    parts = []
    for phase in ("admission", "settlement"):
        text = (
            f"{phase} {counts.get(phase + ':statements', 0):g} statements + "
            f"{counts.get(phase + ':commits', 0):g} COMMIT"
        )
        if phase + ":thread_hops" in counts:
            text += f", {counts[phase + ':thread_hops']:g} aiosqlite thread round trips"
        text += f" through SQLAlchemy, {counts.get(phase + ':fastpath_calls', 0):g} fast-path call"
        if phase + ":fastpath_sql" in counts:
            text += (
                f" ({counts[phase + ':fastpath_sql']:g} SQLite statements with BEGIN and "
                f"{counts.get(phase + ':fastpath_commits', 0):g} COMMIT)"
            )
        parts.append(text)
    return "; ".join(parts)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


# -- PostgreSQL: a database of our own ---------------------------------------------------------


def _plain(url: str) -> str:
    """The asyncpg DSN for an SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_create(admin_url: str) -> str | None:
    """A fresh database next to `admin_url`'s; None (with a message) when unreachable."""
    import asyncpg  # type: ignore[import-untyped]

    name = "td_bench_" + secrets.token_hex(6)
    try:
        conn = await asyncpg.connect(_plain(admin_url), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        print(f"PostgreSQL: SKIPPED — cannot connect ({type(exc).__name__}: {exc})")
        return None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def pg_drop(admin_url: str, url: str) -> None:
    import asyncpg

    name = make_url(url).database
    conn = await asyncpg.connect(_plain(admin_url), timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- main ----------------------------------------------------------------------------------


async def bench_backend(
    name: str, url: str, args: argparse.Namespace, on_cleanup: Callable[[], Awaitable[None]]
) -> tuple[list[RunResult], dict[str, float]]:
    print(f"\n== {name}: migrating, {args.accounts} accounts with one key each …", flush=True)
    backend: Backend | None = None
    try:
        backend = await open_backend(name, url, args.accounts)
        results: list[RunResult] = []
        plan = [(args.concurrency, args.seconds)]
        if args.single_seconds > 0:
            plan.append((1, args.single_seconds))
        for concurrency, seconds in plan:
            print(
                f"   {concurrency} tasks: {WARMUP_SECONDS:.0f} s warm-up + {seconds:g} s …",
                flush=True,
            )
            fast: Any = backend.ledger.fastpath
            before = (getattr(fast, "jobs", 0), getattr(fast, "transactions", 0))
            run = await run_load(backend, concurrency, seconds, f"r{len(results)}c{concurrency}")
            if hasattr(fast, "transactions") and fast.transactions > before[1]:
                run.jobs_per_commit = (fast.jobs - before[0]) / (fast.transactions - before[1])
            run.loadavg_after = loadavg()
            run.checks = await check(backend)
            c = run.checks
            print(
                f"   {run.rps:,.0f} requests/s, added p50 {percentile(run.added_ms, 50):.3f} ms"
                f" · verify() == []: {c['verify_ok']} · open holds: {c['open_holds']} · "
                f"usage rows {c['usage_rows']} == completed {c['completed']}: "
                f"{c['usage_rows_ok']} · balances match charges: {c['balance_ok']}"
                f" · errors: {sum(run.errors.values())} · loadavg {run.loadavg_after}"
                + (
                    ""
                    if run.jobs_per_commit is None
                    else f" · ledger jobs per COMMIT {run.jobs_per_commit:.1f}"
                ),
                flush=True,
            )
            for message, count in run.errors.items():
                print(f"     error ×{count}: {message}")
            results.append(run)
        per_request = await statements_per_request(backend)
        final = await check(backend)
        print(f"   per request (sequential, warm key cache): {statements_text(per_request)}")
        if not final["ok"]:
            print(f"   final check FAILED: {final}")
            results[-1].checks["final_ok"] = False
        return results, per_request
    finally:
        if backend is not None:
            await backend.ledger.close()
            await backend.engine.dispose()
        await on_cleanup()


async def amain(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    started = dt.datetime.now(dt.UTC)
    meta = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "loop": args.loop,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "single_seconds": args.single_seconds,
        "warmup_seconds": WARMUP_SECONDS,
        "accounts": args.accounts,
        "hold_worst_case": PRICE.cost(PROMPT_TOKENS, MAX_TOKENS),
    }
    print(
        f"{meta['date']} · {meta['machine']['nproc']} CPUs · {meta['machine']['cpu']} · "
        f"Python {meta['machine']['python']} · loop {args.loop} · "
        f"loadavg before: {meta['loadavg_before']}"
    )
    runs: list[RunResult] = []
    per_request: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-money-"))
    try:
        if "sqlite" in args.backends:
            url = f"sqlite+aiosqlite:///{tmp / 'money.db'}"

            async def nothing() -> None:
                return None

            results, per_request["sqlite"] = await bench_backend("sqlite", url, args, nothing)
            runs += results
        if "postgresql" in args.backends:
            pg_url = await pg_create(args.postgres_url)
            if pg_url is None:
                skipped["postgresql"] = "unreachable"
            else:

                async def drop() -> None:
                    await pg_drop(args.postgres_url, pg_url)
                    print(f"   dropped database {make_url(pg_url).database}")

                results, per_request["postgresql"] = await bench_backend(
                    "postgresql", pg_url, args, drop
                )
                runs += results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    summaries = [summary(r) for r in runs]
    checks_ok = all(r.checks.get("ok") and r.checks.get("final_ok", True) for r in runs)
    targets = verdicts(summaries, args.concurrency)
    meta["loadavg_after"] = loadavg()
    print(
        f"\n{meta['date']} · loadavg before {meta['loadavg_before']}, after "
        f"{meta['loadavg_after']}\n"
    )
    print(markdown_table(summaries))
    print()
    for t in [] if args.smoke else targets:
        print(f"- {t['target']}: **{'PASS' if t['pass'] else 'FAIL'}** ({t['value']})")
    if args.smoke:
        print("- smoke run: targets not judged (the ledger checks below still count)")
    for backend, why in skipped.items():
        print(f"- {backend}: SKIPPED ({why})")
    print(f"- ledger checks after every run: {'all passed' if checks_ok else 'FAILED'}")
    if args.json:
        doc = {
            "meta": meta,
            "runs": summaries,
            "targets": targets,
            "statements_per_request": per_request,
            "skipped": skipped,
            "checks_ok": checks_ok,
        }
        args.json.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0 if checks_ok else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64, help="tasks (default 64)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument(
        "--single-seconds",
        type=float,
        default=3.0,
        help="measured seconds of the 1-task run (3; 0 skips it)",
    )
    parser.add_argument("--accounts", type=int, default=16, help="accounts, one key each (16)")
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (default both)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TOKENDOCK_TEST_POSTGRES_URL", DEFAULT_PG_URL),
        help="an existing database (default: TOKENDOCK_TEST_POSTGRES_URL, else the local one)",
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds: 8 tasks for 1 s + 1 task for 0.5 s on 2 accounts, no targets judged",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrency, args.seconds, args.single_seconds, args.accounts = 8, 1.0, 0.5, 2
    args.backends = {b.strip() for b in args.backends.split(",") if b.strip()}
    if not args.backends <= {"sqlite", "postgresql"}:
        parser.error("--backends takes sqlite and/or postgresql")
    if args.concurrency < 1 or args.accounts < 1 or args.seconds <= 0:
        parser.error("--concurrency and --accounts must be ≥ 1, --seconds > 0")
    if args.seconds + args.single_seconds > 600:
        parser.error("keep --seconds + --single-seconds under 600")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.loop == "uvloop":
            import uvloop

            return uvloop.run(amain(args))
        return asyncio.run(amain(args))
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("interrupted: engines disposed, temporary files and databases removed")
        return 130


if __name__ == "__main__":
    sys.exit(main())

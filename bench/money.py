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
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench.harness import machine_facts
from bench.money_count import statements_per_request, statements_text
from bench.money_load import (
    MAX_TOKENS,
    PRICE,
    PROMPT_TOKENS,
    WARMUP_SECONDS,
    Backend,
    RunResult,
    check,
    open_backend,
    run_load,
)
from bench.money_report import markdown_table, percentile, summary, verdicts

DEFAULT_PG_URL = "postgresql+asyncpg://tokendock:tokendock@127.0.0.1:5432/postgres"


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """The run's settings and where it ran (printed first, kept in the JSON)."""
    facts = machine_facts()
    return {
        "date": facts["date"],
        "machine": {k: facts[k] for k in ("nproc", "cpu", "python")},
        "loadavg_before": loadavg(),
        "loop": args.loop,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "single_seconds": args.single_seconds,
        "warmup_seconds": WARMUP_SECONDS,
        "accounts": args.accounts,
        "hold_worst_case": PRICE.cost(PROMPT_TOKENS, MAX_TOKENS),
    }


async def run_backends(
    args: argparse.Namespace, tmp: Path
) -> tuple[list[RunResult], dict[str, dict[str, float]], dict[str, str]]:
    """Every backend asked for, each on a database of its own: (runs, statements per request
    by backend, backends skipped and why)."""
    runs: list[RunResult] = []
    per_request: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
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
    return runs, per_request, skipped


def conclude(
    args: argparse.Namespace,
    meta: dict[str, Any],
    runs: list[RunResult],
    per_request: dict[str, dict[str, float]],
    skipped: dict[str, str],
) -> int:
    """Print the table, the targets (not in --smoke) and the checks; the JSON when asked.
    0 when every ledger check passed."""
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


async def amain(args: argparse.Namespace) -> int:
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    meta = describe(args)
    print(
        f"{meta['date']} · {meta['machine']['nproc']} CPUs · {meta['machine']['cpu']} · "
        f"Python {meta['machine']['python']} · loop {args.loop} · "
        f"loadavg before: {meta['loadavg_before']}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-money-"))
    try:
        runs, per_request, skipped = await run_backends(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return conclude(args, meta, runs, per_request, skipped)


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

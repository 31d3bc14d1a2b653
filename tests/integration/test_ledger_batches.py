"""SQLite's group commit with the process under load (every job through the writer thread, many
per COMMIT, no SAVEPOINT per job): a refused hold in a batch leaves nothing behind, a job that
raises fails alone (its batch runs again job by job), and the rest commit. Runs on PostgreSQL
too, where the same calls are one function call each."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select

from tests.integration.conftest import Db
from tests.integration.test_ledger import assert_consistent, new_account, new_key, spent, usage
from tokendock.billing.fastpath_sqlite import SqliteWriter
from tokendock.billing.ledger import Hold, Ledger, Settlement
from tokendock.billing.load import FewInFlight, InFlight
from tokendock.errors import InsufficientCredit, SpendLimitReached
from tokendock.storage.tables import ledger_entries


class Busy:
    """A load signal that is never quiet: SQLite's ledger jobs all go to the writer thread."""

    def quiet(self) -> bool:
        return False


def busy_ledger(db: Db) -> Ledger:
    ledger = Ledger(db.engine, owner="busy", hold_ttl=timedelta(hours=1), load=Busy())
    db.others.append(ledger)
    return ledger


def batched(ledger: Ledger) -> bool:
    """Whether jobs shared COMMITs (always true off SQLite: nothing to check there)."""
    fast = ledger.fastpath
    if not isinstance(fast, SqliteWriter):
        return True
    return fast.inline == 0 and fast.jobs > fast.transactions


async def test_refused_holds_in_a_batch_leave_nothing_behind(db: Db) -> None:
    ledger = busy_ledger(db)
    account = await new_account(db, balance=100_000)
    key = await new_key(db, account, spend_limit=10_000)  # room for 10 holds of 1,000
    poor = await new_account(db, balance=500)
    calls = [ledger.hold(account, key, 1_000, f"r{i}") for i in range(30)]
    calls += [ledger.hold(poor, None, 1_000, f"p{i}") for i in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    held = [r for r in results if isinstance(r, Hold)]
    assert len(held) == 10
    assert sum(isinstance(r, SpendLimitReached) for r in results) == 20
    assert sum(isinstance(r, InsufficientCredit) for r in results) == 5
    assert batched(ledger)
    # Only the ten holds moved money: no debit of a refused hold was left behind.
    assert await ledger.balance(account) == 100_000 - 10_000
    assert await ledger.balance(poor) == 500
    assert await spent(db, account, key) == 10_000
    settled = await asyncio.gather(*[ledger.settle(h, 400, usage(h.request_id)) for h in held])
    assert all(isinstance(s, Settlement) and s.charged == 400 for s in settled)
    assert await ledger.balance(account) == 100_000 - 4_000
    assert await spent(db, account, key) == 4_000
    async with db.engine.connect() as conn:
        entries = (await conn.execute(select(func.count()).select_from(ledger_entries))).scalar()
    assert entries == 2 + 10 * 3  # two grants; per hold: hold, capture, release
    await assert_consistent(db)


async def test_a_job_that_raises_in_a_batch_fails_alone(db: Db) -> None:
    ledger = busy_ledger(db)
    account = await new_account(db, balance=1_000_000)
    key = await new_key(db, account)
    holds = list(
        await asyncio.gather(*[ledger.hold(account, key, 1_000, f"h{i}") for i in range(12)])
    )
    assert await ledger.settle(holds[0], 100, usage("taken")) is not None
    # One reuses a usage request_id (UNIQUE): it raises; the batch reruns job by job.
    calls = [
        ledger.settle(h, 100, usage("taken" if i == 5 else f"ok{i}"))
        for i, h in enumerate(holds[1:])
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [5]
    assert all(isinstance(r, Settlement) for i, r in enumerate(results) if i != 5)
    assert batched(ledger)
    assert await ledger.open_holds() == 1  # the failed one changed nothing: still open
    assert await ledger.settle(holds[6], 100, usage("ok5")) is not None
    assert await ledger.balance(account) == 1_000_000 - 12 * 100
    assert await spent(db, account, key) == 12 * 100
    await assert_consistent(db)


async def test_the_load_signal_steers_where_sqlite_jobs_run(db: Db) -> None:
    """Quiet: a job runs inline on the loop when the writer is idle; busy: on the writer thread."""
    gauge = InFlight()
    ledger = Ledger(
        db.engine, owner="steered", hold_ttl=timedelta(hours=1), load=FewInFlight(gauge, 1)
    )
    db.others.append(ledger)
    fast = ledger.fastpath
    if not isinstance(fast, SqliteWriter):
        return  # PostgreSQL: one function call either way
    account = await new_account(db, balance=100_000)
    first = await ledger.hold(account, None, 1_000, "start")  # starts the writer thread
    await ledger.settle(first, 0, None)
    inline = fast.inline
    for i in range(5):
        await ledger.settle(await ledger.hold(account, None, 1_000, f"q{i}"), 10, usage(f"q{i}"))
    assert fast.inline == inline + 10
    gauge.active = 2
    for i in range(5):
        await ledger.settle(await ledger.hold(account, None, 1_000, f"b{i}"), 10, usage(f"b{i}"))
    assert fast.inline == inline + 10
    assert await ledger.balance(account) == 100_000 - 10 * 10
    await assert_consistent(db)

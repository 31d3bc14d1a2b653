"""The ledger's fast path (billing/fastpath*.py) on every backend: a failing job of a group
commit fails alone, a cancelled hold leaves nothing open, and what it writes reads back the
way SQLAlchemy wrote it before."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from tests.integration.conftest import Db
from tests.integration.test_ledger import assert_consistent, new_account, new_key, usage
from tokendock.billing.ledger import Hold, Settlement
from tokendock.storage.accounts import utc
from tokendock.storage.tables import api_keys, holds, usage_records


async def test_a_failing_settlement_fails_alone_among_concurrent_ones(db: Db) -> None:
    start = 1_000_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    first, *rest = [await db.ledger.hold(account, key, 1_000, f"h{i}") for i in range(9)]
    assert await db.ledger.settle(first, 100, usage("taken")) is not None
    # Queued together (one group commit on SQLite): one reuses a usage request_id (UNIQUE).
    calls = [
        db.ledger.settle(h, 100, usage("taken" if i == 4 else f"ok{i}")) for i, h in enumerate(rest)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1 and results.index(failed[0]) == 4
    assert all(isinstance(r, Settlement) for i, r in enumerate(results) if i != 4)
    # The failed one changed nothing: its hold is still open and can settle later.
    async with db.engine.connect() as conn:
        status = (await conn.execute(select(holds.c.status).where(holds.c.id == rest[4].id))).one()
    assert status[0] == "open"
    assert await db.ledger.settle(rest[4], 100, usage("ok4")) is not None
    assert await db.ledger.balance(account) == start - 9 * 100
    await assert_consistent(db)


async def test_a_cancelled_hold_leaves_no_open_hold_behind(db: Db) -> None:
    start = 1_000_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    for delay in (0, 1, 2, 3, 5, 8):  # cancel before, during and after the database call
        task = asyncio.create_task(db.ledger.hold(account, key, 1_000, f"c{delay}"))
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not task.cancelled():  # it finished before the cancel: settle it like a caller would
            hold = task.result()
            assert isinstance(hold, Hold)
            await db.ledger.settle(hold, 0, None)
    for _ in range(1000):  # an orphaned hold is released in the background (slow under load)
        if await db.ledger.open_holds() == 0:
            break
        await asyncio.sleep(0.01)
    assert await db.ledger.open_holds() == 0
    assert await db.ledger.balance(account) == start
    async with db.engine.connect() as conn:
        spent = (await conn.execute(select(api_keys.c.spent).where(api_keys.c.id == key))).one()
    assert spent[0] == 0
    await assert_consistent(db)


async def test_times_read_back_as_utc_datetimes(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    key = await new_key(db, account)
    before = datetime.now(UTC)
    hold = await db.ledger.hold(account, key, 1_000, "req-1")
    await db.ledger.settle(hold, 10, usage())
    async with db.engine.connect() as conn:
        created, expires = (
            await conn.execute(
                select(holds.c.created_at, holds.c.expires_at).where(holds.c.id == hold.id)
            )
        ).one()
        used = (await conn.execute(select(usage_records.c.created_at))).scalar_one()
        last_used = (
            await conn.execute(select(api_keys.c.last_used_at).where(api_keys.c.id == key))
        ).scalar_one()
    after = datetime.now(UTC)
    for value in (created, used, last_used):
        at = utc(value)
        assert at is not None and before <= at <= after
    assert utc(expires) == utc(created) + timedelta(hours=1)  # type: ignore[operator]
    (row,) = await db.store.usage(account, 10)
    assert row["cost"] == 10

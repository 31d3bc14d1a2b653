"""Holds live while their request runs (issue 9, finding 8): the owning process renews them, a
sweeper releases only holds nobody renews, and a request whose hold was swept anyway is still
charged (late), logged, and reported by `verify()` — never served free. Every backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.conftest import Db
from tests.integration.test_ledger import new_account, new_key, scalar_list, spent, usage
from tokendock.billing.ledger import Ledger, Settlement
from tokendock.storage.tables import holds, ledger_entries

TTL = timedelta(seconds=0.4)


@contextlib.asynccontextmanager
async def renewing(ledger: Ledger) -> AsyncIterator[None]:
    task = asyncio.create_task(ledger.keep_alive())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_request_outliving_several_ttls_keeps_its_hold_and_is_billed(db: Db) -> None:
    start = 100_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    serving = db.other_ledger("replica-a:8000", TTL)
    sweeping = db.other_ledger("replica-b:8000", TTL)
    hold = await serving.hold(account, key, 10_000, "long")
    async with renewing(serving):
        for _ in range(12):  # 1.2 s: three TTLs, a sweep every 0.1 s
            await asyncio.sleep(0.1)
            assert await sweeping.release_stale() == 0
    result = await serving.settle(hold, 6_000, usage("long"))
    assert result == Settlement(charged=6_000, balance=start - 6_000)
    assert (await db.store.usage(account, 1))[0]["cost"] == 6_000
    assert await spent(db, account, key) == 6_000
    assert await db.ledger.verify() == []


async def test_without_renewal_another_replica_sweeps_the_hold(db: Db) -> None:
    # What happened before holds were renewed: the sweeper cannot tell a live request from a
    # dead process once the TTL has passed.
    account = await new_account(db, balance=100_000)
    serving = db.other_ledger("replica-a:8000", TTL)
    await serving.hold(account, None, 10_000, "long")
    await asyncio.sleep(TTL.total_seconds() + 0.1)
    assert await db.other_ledger("replica-b:8000", TTL).release_stale() == 1


async def test_renewal_is_one_statement_and_only_for_requests_still_running(db: Db) -> None:
    account = await new_account(db, balance=100_000)
    ledger = db.other_ledger("replica-a:8000", TTL)
    assert await ledger.renew() == 0  # nothing open: no database work at all
    assert ledger._fast is None
    running = [await ledger.hold(account, None, 1_000, f"r{i}") for i in range(3)]
    done = await ledger.hold(account, None, 1_000, "done")
    await ledger.settle(done, 500, usage("done"))
    assert await ledger.renew() == 3
    # A settlement that failed leaves its hold open, but no longer renewed: it is swept.
    failing = running[0]

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("database gone")

    real_settle = ledger.fastpath.settle
    ledger.fastpath.settle = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await ledger.settle(failing, 100, usage("r0"))
    ledger.fastpath.settle = real_settle  # type: ignore[method-assign]
    assert await ledger.renew() == 2
    await asyncio.sleep(TTL.total_seconds() + 0.1)
    async with renewing(ledger):
        await asyncio.sleep(TTL.total_seconds() / 3 + 0.1)  # one renewal of the other two
        assert await db.other_ledger("replica-b:8000", TTL).release_stale() == 1
    open_ids = await scalar_list(db, select(holds.c.id).where(holds.c.status == "open"))
    assert sorted(open_ids) == sorted(h.id for h in running[1:])


async def test_owner_names_are_unique_per_process_and_start_up_takes_the_instance(db: Db) -> None:
    account = await new_account(db, balance=100_000)
    before = db.other_ledger("host:8000", timedelta(hours=1))  # the previous run, crashed
    sibling = db.other_ledger("host:8000:77", timedelta(hours=1))  # another instance's name
    odd = db.other_ledger("h%st:8000", timedelta(hours=1))  # LIKE metacharacters
    assert before.owner.startswith("host:8000/") and before.owner != before.instance
    assert Ledger(db.engine, owner="host:8000", hold_ttl=TTL).owner != before.owner
    left = [await before.hold(account, None, 1_000, f"b{i}") for i in range(2)]
    kept = [
        await sibling.hold(account, None, 2_000, "s"),
        await odd.hold(account, None, 3_000, "o"),
    ]
    restarted = db.other_ledger("host:8000", TTL)
    assert await restarted.release_stale(owner=restarted.instance) == len(left)
    open_ids = await scalar_list(db, select(holds.c.id).where(holds.c.status == "open"))
    assert sorted(open_ids) == sorted(h.id for h in kept)
    assert await db.other_ledger("h_st:8000", TTL).release_stale(owner="h_st:8000") == 0
    assert await db.ledger.verify() == []


async def test_a_late_settlement_is_charged_logged_and_reported(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    start = 100_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    stalled = db.other_ledger("replica-a:8000", timedelta(seconds=-1))  # renewal never came
    hold = await stalled.hold(account, key, 10_000, "late-1")
    assert await db.other_ledger("replica-b:8000", TTL).release_stale() == 1
    assert await db.ledger.balance(account) == start  # swept: the hold came back in full
    assert await spent(db, account, key) == 0

    with caplog.at_level(logging.ERROR, logger="tokendock.billing.ledger"):
        result = await stalled.settle(hold, 7_000, usage("late-1"))
    assert result == Settlement(charged=7_000, balance=start - 7_000, late=True)
    assert "released by a sweeper" in caplog.text and "late-1" in caplog.text
    assert (await db.store.usage(account, 1))[0]["cost"] == 7_000
    assert await spent(db, account, key) == 7_000
    assert await stalled.settle(hold, 7_000, usage("late-2")) is None  # once
    assert await db.ledger.balance(account) == start - 7_000
    kinds = await scalar_list(
        db,
        select(ledger_entries.c.kind)
        .where(ledger_entries.c.hold_id == hold.id)
        .order_by(ledger_entries.c.id),
    )
    assert kinds == ["hold", "capture", "release", "late"]
    problems = await db.ledger.verify()
    assert len(problems) == 1, problems  # balances still add up; the lapse is reported
    assert hold.id in problems[0] and "released by a sweeper" in problems[0]


async def test_a_late_settlement_never_overdraws(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    stalled = db.other_ledger("replica-a:8000", timedelta(seconds=-1))
    hold = await stalled.hold(account, None, 10_000, "late")
    await db.ledger.release_stale()
    spend = await db.ledger.hold(account, None, 8_000, "meanwhile")  # the balance moved on
    await db.ledger.settle(spend, 8_000, usage("meanwhile"))
    result = await stalled.settle(hold, 9_000, usage("late"))
    assert result == Settlement(charged=2_000, balance=0, uncollected=7_000, late=True)
    assert await db.ledger.balance(account) == 0
    costs = {r["request_id"]: r["cost"] for r in await db.store.usage(account, 10)}
    assert costs == {"meanwhile": 8_000, "late": 2_000}
    assert len(await db.ledger.verify()) == 1

"""A charge above the hold (an upstream reporting more usage than was held, issue 9 finding 5):
the hold is captured and the excess debited up to the balance and the key's spend-limit room,
never below zero, in the settlement's one transaction, on every backend."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from sqlalchemy import select

from tests.integration.conftest import Db
from tests.integration.test_ledger import new_account, new_key, spent, usage
from tokendock.billing.ledger import Settlement
from tokendock.storage.tables import holds, ledger_entries


async def entries(db: Db, hold_id: str) -> list[tuple[Any, ...]]:
    query = (
        select(
            ledger_entries.c.kind,
            ledger_entries.c.amount,
            ledger_entries.c.charged,
            ledger_entries.c.reference,
        )
        .where(ledger_entries.c.hold_id == hold_id)
        .order_by(ledger_entries.c.id)
    )
    async with db.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]


async def test_the_excess_is_debited_up_to_the_balance_and_recorded(
    db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    account = await new_account(db, balance=3_000)
    hold = await db.ledger.hold(account, None, 1_000, "req-1")
    with caplog.at_level(logging.WARNING, logger="tokendock.billing.ledger"):
        result = await db.ledger.settle(hold, 5_000, usage("req-1"))
    assert result == Settlement(charged=3_000, balance=0, uncollected=2_000)
    assert "exceeds its hold" in caplog.text
    assert await db.ledger.balance(account) == 0
    assert await entries(db, hold.id) == [
        ("hold", -1_000, 0, None),
        ("capture", 0, 1_000, None),
        ("overage", -2_000, 2_000, "overage: 4000 wanted, 2000 charged, 2000 uncollected"),
    ]
    assert (await db.store.usage(account, 1))[0]["cost"] == 3_000
    async with db.engine.connect() as conn:
        query = select(holds.c.status, holds.c.captured).where(holds.c.id == hold.id)
        row = (await conn.execute(query)).one()
    assert tuple(row) == ("settled", 1_000)
    assert await db.ledger.verify() == []


async def test_nothing_left_to_charge_still_records_the_shortfall(db: Db) -> None:
    account = await new_account(db, balance=1_000)
    hold = await db.ledger.hold(account, None, 1_000, "req-1")
    result = await db.ledger.settle(hold, 1_500, usage("req-1"))
    assert result == Settlement(charged=1_000, balance=0, uncollected=500)
    assert (await entries(db, hold.id))[-1] == (
        "overage",
        0,
        0,
        "overage: 500 wanted, 0 charged, 500 uncollected",
    )
    assert await db.ledger.verify() == []


async def test_the_excess_stays_within_the_key_spend_limit(db: Db) -> None:
    account = await new_account(db, balance=100_000)
    key = await new_key(db, account, spend_limit=1_500)
    hold = await db.ledger.hold(account, key, 1_000, "req-1")
    result = await db.ledger.settle(hold, 5_000, usage("req-1"))
    assert result == Settlement(charged=1_500, balance=100_000 - 1_500, uncollected=3_500)
    assert await spent(db, account, key) == 1_500
    assert await db.ledger.verify() == []


async def test_an_enormous_charge_neither_overflows_nor_overdraws(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    hold = await db.ledger.hold(account, None, 1_000, "req-1")
    result = await db.ledger.settle(hold, 10**30, usage("req-1"))
    assert result is not None and (result.charged, result.balance) == (10_000, 0)
    assert await db.ledger.verify() == []


async def test_concurrent_over_hold_settlements_never_overdraw(db: Db) -> None:
    start = 20_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    made = [await db.ledger.hold(account, key, 1_000, f"r{i}") for i in range(10)]
    results = await asyncio.gather(
        *(db.ledger.settle(h, 4_000, usage(f"r{i}")) for i, h in enumerate(made))
    )
    charged = sum(r.charged for r in results if r is not None)
    assert charged == start  # 10 × 4,000 wanted; only 20,000 there
    assert sum(r.uncollected for r in results if r is not None) == 40_000 - start
    assert await db.ledger.balance(account) == 0
    assert await spent(db, account, key) == start
    costs = sum(r["cost"] for r in await db.store.usage(account, 20))
    assert costs == start
    assert await db.ledger.verify() == []

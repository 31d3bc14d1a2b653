"""The credit ledger's invariants under concurrency, on every database backend."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError

from tests.integration.conftest import OWNER, Db
from tokendock.billing.ledger import Hold, Settlement, UsageRow
from tokendock.errors import InsufficientCredit, InvalidRequest, SpendLimitReached
from tokendock.storage.tables import holds, ledger_entries, redemption_codes

T = TypeVar("T")
X = 1_000  # micro-credits per hold in the races


async def new_account(db: Db, balance: int = 0) -> int:
    email = f"user-{secrets.token_hex(4)}@example.com"
    # A real argon2 hash costs ~0.1 s; these tests are about money, not passwords.
    account_id = await db.store.create_account(email, "not-a-hash", False)
    if balance:
        assert await db.ledger.credit(
            account_id, balance, kind="grant", idempotency_key=f"grant:{email}", reference="test"
        )
    return account_id


async def new_key(db: Db, account_id: int, spend_limit: int | None = None) -> int:
    return (await db.svc.create_key(account_id, "k", spend_limit=spend_limit)).id


async def gather_all(calls: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


def split(results: list[Any], ok: type, err: type) -> tuple[list[Any], list[Any]]:
    oks = [r for r in results if isinstance(r, ok)]
    errs = [r for r in results if isinstance(r, err)]
    others = [r for r in results if not isinstance(r, ok | err)]
    assert not others, f"unexpected results: {others[:3]!r}"
    return oks, errs


def usage(request_id: str = "req-1", prompt: int = 10, completion: int = 5) -> UsageRow:
    return UsageRow(request_id, "gemma-3-270m", prompt, completion, "ok", "stop", 12, 3, None)


async def spent(db: Db, account_id: int, key_id: int) -> int:
    (key,) = [k for k in await db.store.list_keys(account_id) if k.id == key_id]
    return key.spent


async def scalar(db: Db, query: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(query)).scalar_one()


async def assert_consistent(db: Db) -> None:
    assert await db.ledger.verify() == []


# --- holds ----------------------------------------------------------------------------------


async def test_200_concurrent_holds_never_overdraw(db: Db) -> None:
    account = await new_account(db, balance=10 * X)
    results = await gather_all([db.ledger.hold(account, None, X, f"r{i}") for i in range(200)])
    won, refused = split(results, Hold, InsufficientCredit)
    assert len(won) == 10
    assert len(refused) == 190
    assert len({h.id for h in won}) == 10
    assert sorted(h.balance_after for h in won) == [i * X for i in range(10)]
    assert await db.ledger.balance(account) == 0
    assert await scalar(db, select(func.count()).select_from(holds)) == 10
    await assert_consistent(db)


async def test_insufficient_credit_reports_need_and_balance(db: Db) -> None:
    account = await new_account(db, balance=X - 1)
    with pytest.raises(InsufficientCredit) as info:
        await db.ledger.hold(account, None, X, "r")
    assert (info.value.needed, info.value.balance) == (X, X - 1)
    assert info.value.status == 402
    assert await db.ledger.balance(account) == X - 1


async def test_200_concurrent_holds_respect_the_key_spend_limit(db: Db) -> None:
    start = 1_000 * X
    account = await new_account(db, balance=start)
    key = await new_key(db, account, spend_limit=10 * X)
    results = await gather_all([db.ledger.hold(account, key, X, f"r{i}") for i in range(200)])
    won, refused = split(results, Hold, SpendLimitReached)
    assert len(won) == 10
    assert len(refused) == 190
    # The 190 refused holds debited the account first; their transactions rolled that back.
    assert await db.ledger.balance(account) == start - 10 * X
    assert await spent(db, account, key) == 10 * X
    assert await scalar(db, select(func.count()).select_from(holds)) == 10
    await assert_consistent(db)


# --- settlement -------------------------------------------------------------------------------


async def test_a_hold_settles_exactly_once_under_20_concurrent_settlers(db: Db) -> None:
    start, held, charge = 100_000, 5_000, 2_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, held, "req-1")
    results = await gather_all([db.ledger.settle(hold, charge, usage()) for _ in range(20)])
    assert not [r for r in results if isinstance(r, BaseException)], results
    settled = [r for r in results if isinstance(r, Settlement)]
    assert settled == [Settlement(charged=charge, balance=start - charge)]
    assert results.count(None) == 19
    assert await db.ledger.balance(account) == start - charge
    assert await spent(db, account, key) == charge
    rows = await db.store.usage(account, 10)
    assert len(rows) == 1
    assert (rows[0]["cost"], rows[0]["prompt_tokens"], rows[0]["completion_tokens"]) == (
        charge,
        10,
        5,
    )
    await assert_consistent(db)
    # ...and once settled, it stays settled.
    assert await db.ledger.settle(hold, charge, usage("req-2")) is None
    assert await db.ledger.balance(account) == start - charge


async def test_a_charge_above_the_hold_captures_it_and_debits_the_excess(db: Db) -> None:
    # (More in test_ledger_overage.py: the balance or the key's limit short, late charges.)
    start = 10_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, 1_000, "req-1")
    result = await db.ledger.settle(hold, 5_000, usage())
    assert result == Settlement(charged=5_000, balance=start - 5_000)
    assert await db.ledger.balance(account) == start - 5_000
    assert await spent(db, account, key) == 5_000
    assert (await db.store.usage(account, 1))[0]["cost"] == 5_000
    await assert_consistent(db)


async def test_negative_charge_captures_nothing(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    hold = await db.ledger.hold(account, None, 1_000, "req-1")
    assert await db.ledger.settle(hold, -50, None) == Settlement(charged=0, balance=10_000)
    await assert_consistent(db)


async def test_settle_refunds_the_unused_part(db: Db) -> None:
    start = 10_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, 1_000, "req-1")
    assert hold.balance_after == start - 1_000
    assert await spent(db, account, key) == 1_000  # reserved against the limit while open
    result = await db.ledger.settle(hold, 300, usage())
    assert result == Settlement(charged=300, balance=start - 300)
    assert await db.ledger.balance(account) == start - 300  # back by 700
    assert await spent(db, account, key) == 300
    async with db.engine.connect() as conn:
        entries = (
            await conn.execute(
                select(ledger_entries.c.kind, ledger_entries.c.amount, ledger_entries.c.charged)
                .where(ledger_entries.c.hold_id == hold.id)
                .order_by(ledger_entries.c.id)
            )
        ).all()
        status, captured = (
            await conn.execute(
                select(holds.c.status, holds.c.captured).where(holds.c.id == hold.id)
            )
        ).one()
    assert [tuple(e) for e in entries] == [
        ("hold", -1_000, 0),
        ("capture", 0, 300),
        ("release", 700, 0),
    ]
    assert (status, captured) == ("settled", 300)
    await assert_consistent(db)


async def test_full_capture_writes_no_release_entry(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    hold = await db.ledger.hold(account, None, 1_000, "req-1")
    await db.ledger.settle(hold, 1_000, usage())
    kinds = await scalar_list(
        db, select(ledger_entries.c.kind).where(ledger_entries.c.hold_id == hold.id)
    )
    assert sorted(kinds) == ["capture", "hold"]
    await assert_consistent(db)


async def scalar_list(db: Db, query: Any) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(query)).scalars().all())


# --- stale holds ------------------------------------------------------------------------------


async def test_release_stale_of_an_owner_releases_all_its_open_holds(db: Db) -> None:
    start = 100_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    mine = [await db.ledger.hold(account, key, 1_000 * (i + 1), f"m{i}") for i in range(3)]
    settled = await db.ledger.hold(account, key, 500, "done")
    await db.ledger.settle(settled, 200, usage("done"))
    other = db.other_ledger("other-process", timedelta(hours=1))
    theirs = await other.hold(account, key, 7_000, "t")
    assert await db.ledger.balance(account) == start - 6_000 - 200 - 7_000

    assert await db.ledger.release_stale(owner=OWNER) == 3

    # Ours are back in full (settled at 0); the other process's live hold is untouched.
    assert await db.ledger.balance(account) == start - 200 - 7_000
    assert await spent(db, account, key) == 200 + 7_000
    open_ids = await scalar_list(db, select(holds.c.id).where(holds.c.status == "open"))
    assert open_ids == [theirs.id]
    # Released (swept): settling one now charges nothing more (late, at 0), and only once.
    balance = start - 200 - 7_000
    assert [await db.ledger.settle(h, 0, None) for h in mine] == [
        Settlement(charged=0, balance=balance, late=True)
    ] * 3
    assert [await db.ledger.settle(h, 0, None) for h in mine] == [None] * 3
    assert await db.ledger.release_stale(owner=OWNER) == 0  # nothing left: idempotent
    await assert_consistent(db)


async def test_release_stale_sweep_takes_only_expired_holds_not_running_here(db: Db) -> None:
    start = 1_000_000
    account = await new_account(db, balance=start)
    crashed = db.other_ledger("crashed-process", timedelta(seconds=-1))  # already expired
    alive = db.other_ledger("live-process", timedelta(hours=1))  # not expired
    late = db.other_ledger(OWNER, timedelta(seconds=-1))  # expired: its renewal is late
    expired = [await crashed.hold(account, None, 1_000, f"c{i}") for i in range(4)]
    live = await alive.hold(account, None, 10_000, "l")
    running = await late.hold(account, None, 100_000, "o")
    own_live = await db.ledger.hold(account, None, 200_000, "ol")
    assert await db.ledger.balance(account) == start - 4_000 - 10_000 - 100_000 - 200_000

    # The process whose renewal is late never sweeps its own running request's hold...
    assert await late.release_stale() == 4
    assert await late.release_stale() == 0
    assert await db.ledger.balance(account) == start - 10_000 - 100_000 - 200_000
    open_ids = await scalar_list(db, select(holds.c.id).where(holds.c.status == "open"))
    assert sorted(open_ids) == sorted([live.id, running.id, own_live.id])
    assert all(h.id not in open_ids for h in expired)
    # ...another process's sweeper does (it cannot tell a late renewal from a dead process).
    assert await db.ledger.release_stale() == 1
    assert await db.ledger.balance(account) == start - 10_000 - 200_000
    await assert_consistent(db)


async def test_concurrent_sweeps_release_each_hold_once(db: Db) -> None:
    start = 100_000
    account = await new_account(db, balance=start)
    crashed = db.other_ledger("crashed-process", timedelta(seconds=-1))
    for i in range(5):
        await crashed.hold(account, None, 1_000, f"c{i}")
    sweepers = [db.other_ledger(f"sweeper-{i}", timedelta(hours=1)) for i in range(4)]
    released = await asyncio.gather(*(s.release_stale() for s in sweepers))
    assert sum(released) == 5
    assert await db.ledger.balance(account) == start
    await assert_consistent(db)


# --- redemption codes ---------------------------------------------------------------------------


async def test_a_code_is_redeemed_exactly_once_under_50_concurrent_redemptions(db: Db) -> None:
    amount = 5_000_000
    a = await new_account(db, balance=1_000)
    b = await new_account(db, balance=2_000)
    (code,) = await db.svc.create_codes(amount, 1)
    assert code.startswith("tdc-")
    calls = [db.svc.redeem(a if i % 2 else b, code) for i in range(50)]
    won, refused = split(await gather_all(calls), int, InvalidRequest)
    assert won == [amount]
    assert len(refused) == 49
    assert all(e.param == "code" for e in refused)
    balances = (await db.ledger.balance(a), await db.ledger.balance(b))
    assert balances in [(1_000 + amount, 2_000), (1_000, 2_000 + amount)]
    winner = a if balances[0] > 1_000 else b
    async with db.engine.connect() as conn:
        redeemed_by = (await conn.execute(select(redemption_codes.c.redeemed_by))).scalar_one()
    assert redeemed_by == winner
    n = await scalar(
        db,
        select(func.count())
        .select_from(ledger_entries)
        .where(ledger_entries.c.kind == "redemption"),
    )
    assert n == 1
    await assert_consistent(db)


async def test_unknown_code_is_refused(db: Db) -> None:
    account = await new_account(db)
    with pytest.raises(InvalidRequest):
        await db.svc.redeem(account, "tdc-" + "x" * 24)
    assert await db.ledger.balance(account) == 0


# --- credits ------------------------------------------------------------------------------------


async def test_credit_is_idempotent(db: Db) -> None:
    account = await new_account(db)
    args: dict[str, Any] = {"kind": "topup", "idempotency_key": "stripe:pi_1", "reference": "r"}
    assert await db.ledger.credit(account, 7_000, **args) is True
    assert await db.ledger.credit(account, 7_000, **args) is False
    assert await db.ledger.balance(account) == 7_000
    await assert_consistent(db)


async def test_credit_is_idempotent_under_concurrency(db: Db) -> None:
    account = await new_account(db)
    results = await gather_all(
        [
            db.ledger.credit(account, 7_000, kind="topup", idempotency_key="k", reference="r")
            for _ in range(20)
        ]
    )
    assert sorted(results, key=str) == [False] * 19 + [True], results
    assert await db.ledger.balance(account) == 7_000
    await assert_consistent(db)


async def test_negative_adjustment_cannot_overdraw(db: Db) -> None:
    account = await new_account(db, balance=100)
    with pytest.raises(InsufficientCredit):
        await db.ledger.credit(
            account, -200, kind="adjustment", idempotency_key="adj-1", reference="r"
        )
    assert await db.ledger.balance(account) == 100
    # the failed attempt left no entry behind, so the same key can still be used
    assert await db.ledger.credit(
        account, -60, kind="adjustment", idempotency_key="adj-1", reference="r"
    )
    assert await db.ledger.balance(account) == 40
    await assert_consistent(db)


# --- the database as the last line of defence -------------------------------------------------


async def test_check_constraint_refuses_a_negative_balance(db: Db) -> None:
    account = await new_account(db, balance=10)
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE accounts SET balance = -1 WHERE id = :id"), {"id": account}
            )
    assert await db.ledger.balance(account) == 10


async def test_check_constraint_refuses_spending_past_the_key_limit(db: Db) -> None:
    account = await new_account(db)
    key = await new_key(db, account, spend_limit=100)
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE api_keys SET spent = 101 WHERE id = :id"), {"id": key})
    assert await spent(db, account, key) == 0


async def test_idempotency_keys_are_unique_in_the_schema(db: Db) -> None:
    account = await new_account(db)
    entry = {
        "account_id": account,
        "kind": "grant",
        "amount": 1,
        "charged": 0,
        "idempotency_key": "same",
        "created_at": datetime.now(UTC),
    }
    async with db.engine.begin() as conn:
        await conn.execute(insert(ledger_entries).values(**entry))
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(ledger_entries).values(**entry))


async def test_verify_reports_a_balance_that_drifted_from_its_entries(db: Db) -> None:
    account = await new_account(db, balance=10)
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE accounts SET balance = 11 WHERE id = :id"), {"id": account})
    problems = await db.ledger.verify()
    assert len(problems) == 1
    assert f"account {account}" in problems[0]
    assert "11" in problems[0] and "10" in problems[0]

"""Amounts have a maximum (money.MAX_BALANCE = 10^15 micro-credits = 10^9 credits) that a
BIGINT holds with room to spare: a grant or redemption past it is refused atomically, a hold
past it is refused without touching the database, and the CLI names the field. Before, a grant
could take a balance past 2^63 micro-credits, where SQLite turns it into a REAL and `ledger
verify` and the credits page broke. Every backend."""

from __future__ import annotations

import asyncio
import contextlib
import io

import pytest
from sqlalchemy import func, select

from tests.integration.conftest import Db
from tests.integration.test_ledger import new_account, scalar
from tokendock import cli
from tokendock.billing.ledger import BALANCE_LIMIT
from tokendock.billing.money import MAX_AMOUNT, MAX_BALANCE
from tokendock.errors import InsufficientCredit, InvalidRequest
from tokendock.security import keys
from tokendock.storage.tables import holds, ledger_entries, redemption_codes


async def grant(db: Db, account: int, amount: int, ref: str) -> bool:
    return await db.ledger.credit(
        account, amount, kind="grant", idempotency_key=f"grant:{ref}", reference=ref
    )


async def test_a_grant_past_the_maximum_is_refused_and_changes_nothing(db: Db) -> None:
    account = await new_account(db, balance=MAX_BALANCE - 10)
    entries = await scalar(db, select(func.count()).select_from(ledger_entries))
    with pytest.raises(InvalidRequest) as refused:
        await grant(db, account, 11, "one-too-many")
    assert (refused.value.code, refused.value.param) == (BALANCE_LIMIT, "amount")
    assert "0.000010 more" in refused.value.message
    assert await db.ledger.balance(account) == MAX_BALANCE - 10
    assert await scalar(db, select(func.count()).select_from(ledger_entries)) == entries
    # The refused idempotency key was not used up: the same reference can be applied later.
    assert await grant(db, account, 10, "one-too-many")
    assert await db.ledger.balance(account) == MAX_BALANCE
    assert await db.ledger.verify() == []


async def test_open_holds_count_towards_the_maximum(db: Db) -> None:
    account = await new_account(db, balance=MAX_BALANCE - 100)
    hold = await db.ledger.hold(account, None, 1_000, "req")
    with pytest.raises(InvalidRequest):
        await grant(db, account, 101, "over")
    assert await grant(db, account, 100, "fits")
    # Released, the hold comes back without passing the maximum.
    await db.ledger.settle(hold, 0, None)
    assert await db.ledger.balance(account) == MAX_BALANCE
    assert await db.ledger.verify() == []


async def test_many_grants_near_the_maximum_stay_integers(db: Db) -> None:
    account = await new_account(db)
    results = []
    for i in range(12):  # 12 × 10^14 would pass 10^15: the last two are refused
        try:
            results.append(await grant(db, account, 10**14, f"g{i}"))
        except InvalidRequest:
            results.append(False)
    assert results.count(True) == 10
    assert await db.ledger.balance(account) == MAX_BALANCE
    assert await db.ledger.verify() == []


async def test_a_code_that_would_pass_the_maximum_stays_unredeemed(db: Db) -> None:
    account = await new_account(db, balance=MAX_BALANCE - 5)
    (code,) = await db.svc.create_codes(6, 1)
    with pytest.raises(InvalidRequest) as refused:
        await db.svc.redeem(account, code)
    assert (refused.value.code, refused.value.param) == (BALANCE_LIMIT, "code")
    digest = keys.digest(code)
    query = select(redemption_codes.c.redeemed_by).where(redemption_codes.c.digest == digest)
    assert await scalar(db, query) is None  # the claim was rolled back with the credit
    other = await new_account(db)
    assert await db.svc.redeem(other, code) == 6
    assert await db.ledger.verify() == []


@pytest.mark.parametrize("amount", [0, MAX_AMOUNT + 1])
async def test_codes_outside_the_bounds_are_refused(db: Db, amount: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await db.svc.create_codes(amount, 1)
    assert refused.value.param == "amount"


async def test_a_hold_past_the_maximum_is_refused_before_the_database(db: Db) -> None:
    account = await new_account(db, balance=1_000)
    with pytest.raises(InsufficientCredit):
        await db.ledger.hold(account, None, 2**70, "huge")  # no BIGINT holds this
    assert await scalar(db, select(func.count()).select_from(holds)) == 0
    assert await db.ledger.balance(account) == 1_000


def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(list(args))
    return code, err.getvalue()


async def test_the_cli_names_the_field_of_an_amount_out_of_bounds(db: Db) -> None:
    if db.backend != "sqlite":
        pytest.skip("the CLI's parsing does not depend on the database")
    url = ["--database-url", db.url]
    code, err = await asyncio.to_thread(
        run_cli, "accounts", "create", "big@example.com", "--grant", "2000000000", *url
    )
    assert code == 2 and "--grant: at most 1000000000.000000 credits" in err
    code, err = await asyncio.to_thread(
        run_cli, "accounts", "create", "big@example.com", "--grant", "999999999", *url
    )
    assert code == 0, err
    code, err = await asyncio.to_thread(
        run_cli, "credits", "grant", "big@example.com", "1.000001", "--reference", "r1", *url
    )
    assert code == 1 and "amount: This would take the balance past the maximum" in err
    code, err = await asyncio.to_thread(run_cli, "codes", "create", "1000000000.5", *url)
    assert code == 2 and "amount: at most" in err

"""The credit ledger: holds before generation, settlement after, grants in between.

Invariants (also enforced by the schema in storage/tables.py):
1. Amounts are integer micro-credits; `accounts.balance` is the AVAILABLE balance and is never
   negative (CHECK constraint, and every debit is a conditional UPDATE … WHERE balance >= x).
2. Every movement is an append-only `ledger_entries` row with a unique idempotency key, and
   `accounts.balance == Σ ledger_entries.amount` for every account (`verify()` proves it).
3. A hold is created in one transaction with its debit; it is settled exactly once: the guarded
   UPDATE holds … WHERE status = 'open' lets only one settler through, crashes included.
4. Settlement captures at most the held amount, refunds the rest, and writes the usage record
   in the same transaction, so a charge never exists without its usage row or vice versa.

`hold` and `settle` run these rules as one database call each (billing/fastpath*.py: a writer
thread with plain sqlite3 on SQLite, plpgsql functions from migration 0003 on PostgreSQL);
the rest goes through SQLAlchemy.

Entry kinds and their `amount` (change of the available balance):
    grant / topup / redemption / adjustment   +x (adjustment may be negative)
    hold                                       -held
    release                                    +(held - charged)
    capture                                     0   (`charged` records what the hold paid)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.billing import fastpath
from tokendock.billing.fastpath import FastPath
from tokendock.errors import InsufficientCredit, SpendLimitReached
from tokendock.storage.tables import accounts, holds, ledger_entries, redemption_codes


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: int
    key_id: int | None
    amount: int
    balance_after: int  # available balance right after the hold


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    status: str
    finish_reason: str | None
    latency_ms: int
    ttft_ms: int | None
    user: str | None
    deployment: str | None = None  # the upstream that served it; None for the embedded engine
    estimated: bool = False  # token counts estimated (an upstream that reported no usage)


@dataclass(frozen=True, slots=True)
class Settlement:
    charged: int
    balance: int


class Ledger:
    """`hold` and `settle` (per request) run as one database call each through the backend's
    fast path (billing/fastpath.py); everything else goes through the SQLAlchemy engine.
    Call `close()` at shutdown, after the last settlement and before disposing the engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owner: str,
        hold_ttl: timedelta,
        quiet: Callable[[], bool] | None = None,
    ):
        self._engine = engine
        self.owner = owner
        self._hold_ttl = hold_ttl
        self._quiet = quiet
        self._fast: FastPath | None = None  # made on first use: CLI commands never need it

    @property
    def fastpath(self) -> FastPath:
        if self._fast is None:
            self._fast = fastpath.for_engine(self._engine, self._quiet)
        return self._fast

    async def close(self) -> None:
        """Finish queued ledger work and close the fast path's own connections."""
        if self._fast is not None:
            await self._fast.close()

    # -- holds -------------------------------------------------------------------------

    async def hold(self, account_id: int, key_id: int | None, amount: int, request_id: str) -> Hold:
        """Debit `amount` and open a hold for it, in one transaction. Raises InsufficientCredit
        or SpendLimitReached (and changes nothing) when the balance or the key's limit is short."""
        hold_id = "hold_" + secrets.token_hex(12)
        at = now()
        outcome, balance = await self.fastpath.hold(
            hold_id, account_id, key_id, amount, request_id, self.owner, at, at + self._hold_ttl
        )
        if outcome == fastpath.NO_CREDIT:
            raise InsufficientCredit(amount, balance)
        if outcome == fastpath.OVER_LIMIT:
            raise SpendLimitReached(amount)
        return Hold(hold_id, account_id, key_id, amount, balance)

    async def settle(self, hold: Hold, charge: int, usage: UsageRow | None) -> Settlement | None:
        """Capture `charge` (capped at the hold), refund the rest, record usage. Exactly once:
        a second call for the same hold changes nothing and returns None."""
        charge = max(0, min(charge, hold.amount))
        refund = hold.amount - charge
        balance = await self.fastpath.settle(
            hold.id, hold.account_id, hold.key_id, charge, refund, now(), usage
        )
        if balance is None:
            return None
        return Settlement(charge, balance)

    async def release_stale(self, *, owner: str | None = None) -> int:
        """Release holds a crashed process left behind: those of `owner` (at start-up), or
        those of other processes past their expiry (periodic sweep). Returns how many."""
        query = select(holds).where(holds.c.status == "open")
        if owner is not None:
            query = query.where(holds.c.owner == owner)
        else:
            query = query.where(holds.c.expires_at < now(), holds.c.owner != self.owner)
        async with self._engine.connect() as conn:
            stale = (await conn.execute(query)).mappings().all()
        released = 0
        for h in stale:
            hold = Hold(h["id"], h["account_id"], h["key_id"], h["amount"], 0)
            if await self.settle(hold, 0, None) is not None:
                released += 1
        return released

    # -- credits -----------------------------------------------------------------------

    async def credit(
        self, account_id: int, amount: int, *, kind: str, idempotency_key: str, reference: str
    ) -> bool:
        """Add credits once per idempotency key. False when that key was already applied."""
        try:
            async with self._engine.begin() as conn:
                await self._entry(
                    conn, account_id, kind, amount, idempotency_key, None, reference=reference
                )
                row = await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == account_id, accounts.c.balance + amount >= 0)
                    .values(balance=accounts.c.balance + amount)
                )
                if row.rowcount != 1:
                    raise InsufficientCredit(-amount, await self._balance(conn, account_id))
        except IntegrityError:
            return False
        return True

    async def redeem(self, digest: str, account_id: int) -> int | None:
        """Redeem a code into the account: its amount, or None when unknown or already used.
        The claim and the credit are one transaction; of any number of concurrent redemptions
        of one code, the guarded UPDATE lets exactly one through."""
        async with self._engine.begin() as conn:
            row = await conn.execute(
                update(redemption_codes)
                .where(
                    redemption_codes.c.digest == digest, redemption_codes.c.redeemed_by.is_(None)
                )
                .values(redeemed_by=account_id, redeemed_at=now())
                .returning(redemption_codes.c.id, redemption_codes.c.amount)
            )
            claimed = row.first()
            if claimed is None:
                return None
            code_id, amount = int(claimed[0]), int(claimed[1])
            await self._entry(
                conn,
                account_id,
                "redemption",
                amount,
                f"code:{code_id}",
                None,
                reference=f"redemption code #{code_id}",
            )
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(balance=accounts.c.balance + amount)
            )
        return amount

    async def balance(self, account_id: int) -> int:
        async with self._engine.connect() as conn:
            return await self._balance(conn, account_id)

    async def open_holds(self) -> int:
        async with self._engine.connect() as conn:
            query = select(func.count()).select_from(holds).where(holds.c.status == "open")
            return int((await conn.execute(query)).scalar_one())

    async def verify(self) -> list[str]:
        """Problems found; empty when every balance equals the sum of its entries."""
        sums = (
            select(ledger_entries.c.account_id, func.sum(ledger_entries.c.amount).label("total"))
            .group_by(ledger_entries.c.account_id)
            .subquery()
        )
        query = select(accounts.c.id, accounts.c.email, accounts.c.balance, sums.c.total).join(
            sums, sums.c.account_id == accounts.c.id, isouter=True
        )
        problems = []
        async with self._engine.connect() as conn:
            for row in (await conn.execute(query)).all():
                total = int(row.total or 0)
                if row.balance != total or row.balance < 0:
                    problems.append(
                        f"account {row.id} ({row.email}): balance {row.balance} != "
                        f"sum of ledger entries {total}"
                    )
        return problems

    # -- helpers -----------------------------------------------------------------------

    async def _balance(self, conn: AsyncConnection, account_id: int) -> int:
        row = await conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id))
        return int(row.scalar_one_or_none() or 0)

    async def _entry(
        self,
        conn: AsyncConnection,
        account_id: int,
        kind: str,
        amount: int,
        idempotency_key: str,
        hold_id: str | None,
        *,
        charged: int = 0,
        reference: str | None = None,
    ) -> None:
        await conn.execute(
            insert(ledger_entries).values(
                account_id=account_id,
                kind=kind,
                amount=amount,
                charged=charged,
                hold_id=hold_id,
                idempotency_key=idempotency_key,
                reference=reference,
                created_at=now(),
            )
        )

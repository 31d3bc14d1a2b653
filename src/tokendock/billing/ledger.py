"""The credit ledger: holds before generation, settlement after, grants in between.

Invariants (also enforced by the schema in storage/tables.py):
1. Amounts are integer micro-credits; `accounts.balance` is the AVAILABLE balance and is never
   negative (CHECK constraint, and every debit is a conditional UPDATE … WHERE balance >= x).
   Balance + open holds never exceed money.MAX_BALANCE (10^15): a grant or redemption that
   would pass it is refused, so no sum the ledger forms comes near BIGINT's limit.
2. Every movement is an append-only `ledger_entries` row with a unique idempotency key, and
   `accounts.balance == Σ ledger_entries.amount` for every account (`verify()` proves it).
3. A hold is created in one transaction with its debit; it leaves `open` exactly once: the
   guarded UPDATE holds … WHERE status = 'open' lets only one settler through, crashes included.
4. Settlement captures up to the held amount and refunds the rest; a charge above the hold
   debits the excess up to the available balance and the key's spend-limit room (never below
   zero; the shortfall is recorded). The usage record is written in the same transaction, so a
   charge never exists without its usage row or vice versa. The row's free text is cut to
   fit, or left out should the database refuse it: the charge never waits on it
   (billing/settling.py).
5. Holds live while their request runs: the owning process renews `expires_at` of its open
   holds every third of the TTL (`renew`, one statement). A sweeper releases only holds past
   `expires_at`, i.e. of a process that stopped renewing (gone), as `swept`. Should such a
   request settle after all, it is charged then as a plain `late` debit (same bounds), with its
   usage row, logged as an error and reported by `verify()`: never silently free.

Owners: `Ledger(owner=INSTANCE)` names its holds INSTANCE/<random>, unique per process. At
start-up a process releases every hold of its INSTANCE (left by its previous run: instance
names are unique among live processes, HOST:PORT by default); holds of other processes that
died are swept once past their expiry (the TTL, 30 s by default, after their last renewal).

`hold` and `settle` run these rules as one database call each (billing/fastpath*.py: a writer
thread with plain sqlite3 on SQLite, plpgsql functions on PostgreSQL; their statements, each
written once, in storage/ledger_sql.py); the rest goes through SQLAlchemy.

Entry kinds and their `amount` (change of the available balance):
    grant / topup / redemption / adjustment   +x (adjustment may be negative)
    hold                                       -held
    release                                    +(held - captured)
    capture                                     0   (`charged` records what the hold paid)
    overage                                    -x  (charged above the hold; `charged` = x)
    late                                       -x  (charged after a sweeper took the hold)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.billing import fastpath, settling
from tokendock.billing.fastpath import FastPath
from tokendock.billing.load import Load
from tokendock.billing.money import MAX_BALANCE, format_credits
from tokendock.billing.records import (
    NO_CREDIT,
    OPEN,
    OVER_LIMIT,
    Hold,
    LineResult,
    Settlement,
    UsageRow,
)
from tokendock.errors import InsufficientCredit, InvalidRequest, SpendLimitReached
from tokendock.storage.tables import accounts, holds, ledger_entries, redemption_codes

__all__ = ["BALANCE_LIMIT", "Hold", "Ledger", "Settlement", "UsageRow"]

log = logging.getLogger(__name__)

OWNER_WIDTH = 200  # holds.owner
REFERENCE_CHARS = 400  # ledger_entries.reference
BALANCE_LIMIT = "balance_limit_exceeded"  # the error code of a credit refused past MAX_BALANCE


def now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """`hold` and `settle` (per request) run as one database call each through the backend's
    fast path (billing/fastpath.py); everything else goes through the SQLAlchemy engine.
    Run `keep_alive()` as a task while serving; call `close()` at shutdown, after the last
    settlement and before disposing the engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        owner: str,
        hold_ttl: timedelta,
        load: Load | None = None,
    ):
        """`load`: whether the process is quiet enough for SQLite's ledger jobs to run inline
        on the event loop (billing/load.py); None: whenever the writer is idle."""
        self._engine = engine
        self.instance = owner[: OWNER_WIDTH - 9]
        self.owner = f"{self.instance}/{secrets.token_hex(4)}"  # unique to this process
        self._hold_ttl = hold_ttl
        self._load = load
        # Hold ids: a random prefix per ledger and a counter: unique without a syscall each, and
        # ascending, so a batch of new holds (and their entries' idempotency keys) lands in the
        # same B-tree leaf instead of one random leaf each.
        self._hold_prefix = "hold_" + secrets.token_hex(8)
        self._hold_numbers = itertools.count()
        self._fast: FastPath | None = None  # made on first use: CLI commands never need it
        self._open: set[str] = set()  # ids of this process's holds not yet settled

    @property
    def fastpath(self) -> FastPath:
        if self._fast is None:
            self._fast = fastpath.for_engine(self._engine, self._load)
        return self._fast

    async def close(self) -> None:
        """Finish queued ledger work and close the fast path's own connections."""
        if self._fast is not None:
            await self._fast.close()

    # -- holds -------------------------------------------------------------------------

    async def hold(self, account_id: int, key_id: int | None, amount: int, request_id: str) -> Hold:
        """Debit `amount` and open a hold for it, in one transaction. Raises InsufficientCredit
        or SpendLimitReached (and changes nothing) when the balance or the key's limit is short."""
        if amount > MAX_BALANCE:  # no balance covers it (and a BIGINT might not hold it)
            raise InsufficientCredit(amount, await self.balance(account_id))
        hold_id = f"{self._hold_prefix}{next(self._hold_numbers):010x}"  # 31 of 40 characters
        at = now()
        outcome, balance = await self.fastpath.hold(
            hold_id, account_id, key_id, amount, request_id, self.owner, at, at + self._hold_ttl
        )
        if outcome == NO_CREDIT:
            raise InsufficientCredit(amount, balance)
        if outcome == OVER_LIMIT:
            raise SpendLimitReached(amount)
        self._open.add(hold_id)
        return Hold(hold_id, account_id, key_id, amount, balance, request_id)

    async def settle(
        self, hold: Hold, charge: int, usage: UsageRow | None, fence: LineResult | None = None
    ) -> Settlement | None:
        """Charge `charge` for the request behind `hold` and record `usage`, in one transaction:
        up to the hold it is captured and the rest refunded; above it, the excess is debited up
        to the available balance and the key's spend-limit room (never below zero), and what
        could not be charged is `uncollected`. Exactly once: a second call for the same hold
        changes nothing and returns None. If a sweeper released the hold meanwhile, `charge`
        is debited now on the same terms (`late`), logged as an error.
        `fence`: a batch line's result, written in the same transaction only while the line's
        claim holds (records.LineResult); a lost claim settles nothing: the hold is released."""
        charge = max(0, min(charge, hold.amount + MAX_BALANCE))
        try:
            result = await settling.settle(self.fastpath, hold, charge, usage, now(), fence)
            if fence is not None and fence.won is False:
                log.warning(
                    "batch %s line %d: its claim was taken over while it ran; its result is "
                    "dropped and its hold released",
                    fence.batch_id,
                    fence.line,
                )
                result = None
                await settling.settle(self.fastpath, hold, 0, None, now())
        finally:
            self._open.discard(hold.id)
        if result is None:
            return None
        charged, balance, late = result
        settlement = Settlement(charged, balance, charge - charged, late)
        request = usage.request_id if usage is not None else hold.request_id
        if late:
            log.error(
                "request %s: its credit hold %s was released by a sweeper while the request "
                "ran (hold renewal failed?); charged %s credits late as a plain debit, %s "
                "uncollected",
                request,
                hold.id,
                format_credits(charged),
                format_credits(settlement.uncollected),
            )
        elif charge > hold.amount:
            log.warning(
                "request %s: cost %s credits exceeds its hold of %s; charged %s, %s uncollected",
                request,
                format_credits(charge),
                format_credits(hold.amount),
                format_credits(charged),
                format_credits(settlement.uncollected),
            )
        return settlement

    async def renew(self) -> int:
        """Keep the holds of this process's running requests alive: one UPDATE moving their
        expiry a TTL ahead (nothing at all while there are none). Only holds still awaiting
        their settlement: one whose settlement failed is left to expire and be swept. How
        many were renewed."""
        if not self._open:
            return 0
        return await self.fastpath.renew(self.owner, list(self._open), now() + self._hold_ttl)

    async def keep_alive(self) -> None:
        """Renew this process's holds every third of the TTL, until cancelled: a hold expires
        only when its process is gone (or cannot reach the database for two thirds of a TTL)."""
        every = self._hold_ttl.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing credit holds failed; they expire unless renewed in time")

    async def release_stale(self, *, owner: str | None = None) -> int:
        """Release holds whose request is gone, as `swept`: those of instance `owner` (at
        start-up: its previous run's), or those past their expiry (no longer renewed: their
        process is gone, or their settlement failed) — the periodic sweep. Returns how many."""
        query = select(holds).where(holds.c.status == OPEN)
        if owner is not None:
            query = query.where(
                or_(holds.c.owner == owner, holds.c.owner.startswith(owner + "/", autoescape=True))
            )
        else:
            query = query.where(holds.c.expires_at < now())
        async with self._engine.connect() as conn:
            stale = (await conn.execute(query)).mappings().all()
        released = 0
        for h in stale:
            if owner is None and h["id"] in self._open:
                continue  # this process's running request (renewal is late): never swept
            result = await self.fastpath.settle(
                h["id"], h["account_id"], h["key_id"], h["amount"], 0, now(), None, swept=True
            )
            if result is not None:
                released += 1
        return released

    # -- credits -----------------------------------------------------------------------

    async def credit(
        self, account_id: int, amount: int, *, kind: str, idempotency_key: str, reference: str
    ) -> bool:
        """Add credits once per idempotency key. False when that key was already applied.
        Refused (400 balance_limit_exceeded, nothing changed) past MAX_BALANCE."""
        try:
            async with self._engine.begin() as conn:
                await self._entry(
                    conn, account_id, kind, amount, idempotency_key, None, reference=reference
                )
                await self._add(conn, account_id, amount, "amount")
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
            await self._add(conn, account_id, amount, "code")  # refused: the claim rolls back
        return amount

    async def balance(self, account_id: int) -> int:
        async with self._engine.connect() as conn:
            return await self._balance(conn, account_id)

    async def open_holds(self) -> int:
        async with self._engine.connect() as conn:
            query = select(func.count()).select_from(holds).where(holds.c.status == OPEN)
            return int((await conn.execute(query)).scalar_one())

    async def verify(self) -> list[str]:
        """Problems found; empty when every balance equals the sum of its entries, lies within
        [0, MAX_BALANCE], and no hold was swept while its request still ran."""
        sums = (
            select(ledger_entries.c.account_id, func.sum(ledger_entries.c.amount).label("total"))
            .group_by(ledger_entries.c.account_id)
            .subquery()
        )
        query = select(accounts.c.id, accounts.c.email, accounts.c.balance, sums.c.total).join(
            sums, sums.c.account_id == accounts.c.id, isouter=True
        )
        late = (
            select(ledger_entries.c.account_id, ledger_entries.c.hold_id, holds.c.request_id)
            .add_columns(ledger_entries.c.reference)
            .join(holds, holds.c.id == ledger_entries.c.hold_id)
            .where(ledger_entries.c.kind == "late")
            .order_by(ledger_entries.c.id)
        )
        problems = []
        async with self._engine.connect() as conn:
            for row in (await conn.execute(query)).all():
                total = int(row.total or 0)
                if row.balance != total or not 0 <= row.balance <= MAX_BALANCE:
                    problems.append(
                        f"account {row.id} ({row.email}): balance {row.balance} != "
                        f"sum of ledger entries {total}"
                        if row.balance != total
                        else f"account {row.id} ({row.email}): balance {row.balance} outside "
                        f"[0, {MAX_BALANCE}]"
                    )
            for row in (await conn.execute(late)).all():
                problems.append(
                    f"account {row.account_id}: hold {row.hold_id} of request {row.request_id} "
                    f"was released by a sweeper while the request still ran ({row.reference})"
                )
        return problems

    # -- helpers -----------------------------------------------------------------------

    async def _balance(self, conn: AsyncConnection, account_id: int) -> int:
        row = await conn.execute(select(accounts.c.balance).where(accounts.c.id == account_id))
        return int(row.scalar_one_or_none() or 0)

    async def _add(self, conn: AsyncConnection, account_id: int, amount: int, field: str) -> None:
        """balance += amount inside `conn`'s transaction: never below zero, and never with the
        open holds past MAX_BALANCE. The row is locked first (PostgreSQL; SQLite's BEGIN
        IMMEDIATE already serializes writers), so the open holds read next are exact."""
        locked = await conn.execute(
            select(accounts.c.balance).where(accounts.c.id == account_id).with_for_update()
        )
        balance = int(locked.scalar_one_or_none() or 0)
        held = select(func.coalesce(func.sum(holds.c.amount), 0)).where(
            holds.c.account_id == account_id, holds.c.status == OPEN
        )
        in_holds = int((await conn.execute(held)).scalar_one())
        if amount > 0 and balance + in_holds + amount > MAX_BALANCE:
            room = max(0, MAX_BALANCE - balance - in_holds)
            raise InvalidRequest(
                f"This would take the balance past the maximum of "
                f"{format_credits(MAX_BALANCE)} credits; at most {format_credits(room)} "
                "more can be added to this account.",
                param=field,
                code=BALANCE_LIMIT,
            )
        row = await conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id, accounts.c.balance + amount >= 0)
            .values(balance=accounts.c.balance + amount)
        )
        if row.rowcount != 1:
            raise InsufficientCredit(-amount, balance)

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
                # A free-text note, cut to its column's width so a long one never fails a write.
                reference=None if reference is None else reference[:REFERENCE_CHARS],
                created_at=now(),
            )
        )

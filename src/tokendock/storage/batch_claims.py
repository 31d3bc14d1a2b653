"""Claiming a batch's lines (storage/batches.py states the rules): a claim takes up to n lines
nobody runs and increments each one's `lease`, the fencing token of its one result; a claim is
renewed while its line runs, given back when its process stops, and a line's result written
without a settlement only while its claim holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.db import reader
from tokendock.storage.tables import batch_lines as lines_t
from tokendock.storage.tables import batches as t


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ClaimedLine:
    batch_id: str
    line: int
    custom_id: str
    body: str
    lease: int


class LineClaims:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)
        self._pg = engine.dialect.name == "postgresql"

    async def claim(self, batch_id: str, owner: str, n: int, until: datetime) -> list[ClaimedLine]:
        """Up to `n` lines of the batch nobody runs: pending ones, or running ones whose claim
        expired. Each claim increments the line's `lease`: the fencing token of its result."""
        at = now()
        free = or_(
            lines_t.c.state == "pending",
            and_(lines_t.c.state == "running", lines_t.c.lease_until < at),
        )
        pick = (
            select(lines_t.c.batch_id, lines_t.c.line)
            .where(lines_t.c.batch_id == batch_id, free)
            .order_by(lines_t.c.line)
            .limit(n)
        )
        if self._pg:
            pick = pick.with_for_update(skip_locked=True)
        query = (
            update(lines_t)
            .where(tuple_(lines_t.c.batch_id, lines_t.c.line).in_(pick.scalar_subquery()))
            .where(free)
            .values(
                state="running",
                lease=lines_t.c.lease + 1,
                lease_owner=owner,
                lease_until=until,
            )
            .returning(lines_t.c.line, lines_t.c.custom_id, lines_t.c.body, lines_t.c.lease)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(query)).all()
        claimed = [ClaimedLine(batch_id, r.line, r.custom_id, r.body, r.lease) for r in rows]
        claimed.sort(key=lambda c: c.line)
        return claimed

    async def renew(self, owner: str, claims: Sequence[ClaimedLine], until: datetime) -> None:
        """Move the deadline of this process's claims that still hold."""
        if not claims:
            return
        async with self._engine.begin() as conn:
            for c in claims:
                await conn.execute(update(lines_t).where(*_held(c)).values(lease_until=until))

    async def write_result(self, claim: ClaimedLine, outcome: str, result: str) -> bool:
        """A line's result without a settlement (it never reached admission), fenced by its
        lease, and the batch's counters, in one transaction. Whether the claim held."""
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(lines_t)
                .where(*_held(claim))
                .values(
                    state="done", outcome=outcome, result=result, lease_owner=None, lease_until=None
                )
            )
            if done.rowcount != 1:
                return False
            await conn.execute(count_done(claim.batch_id, outcome, 1))
            return True

    async def close_pending(self, batch_id: str, outcome: str, result: str | None) -> int:
        """Every line not started ends with `outcome` (canceled, expired, or errored when the
        key was revoked) — and running lines whose claim expired too. How many."""
        at = now()
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(lines_t)
                .where(
                    lines_t.c.batch_id == batch_id,
                    or_(
                        lines_t.c.state == "pending",
                        and_(lines_t.c.state == "running", lines_t.c.lease_until < at),
                    ),
                )
                .values(
                    state="done",
                    outcome=outcome,
                    result=result,
                    lease=lines_t.c.lease + 1,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if done.rowcount:
                await conn.execute(count_done(batch_id, outcome, done.rowcount))
            return int(done.rowcount)

    async def give_back_all(self, claims: Sequence[ClaimedLine]) -> None:
        """This process stops: its claims that still hold go back to `pending` (their lease
        moves on, so a late write of this process finds nothing to write)."""
        if not claims:
            return
        async with self._engine.begin() as conn:
            for c in claims:
                await conn.execute(
                    update(lines_t)
                    .where(*_held(c))
                    .values(
                        state="pending",
                        lease=lines_t.c.lease + 1,
                        lease_owner=None,
                        lease_until=None,
                    )
                )

    async def unfinished(self, batch_id: str) -> int:
        """Lines pending or running."""
        async with self._reader.connect() as conn:
            got = await conn.execute(
                select(func.count())
                .select_from(lines_t)
                .where(lines_t.c.batch_id == batch_id, lines_t.c.state != "done")
            )
            return int(got.scalar_one())


def count_done(batch_id: str, outcome: str, n: int) -> Any:
    column = {"succeeded": t.c.succeeded, "errored": t.c.errored, "canceled": t.c.canceled}.get(
        outcome, t.c.expired
    )
    return update(t).where(t.c.id == batch_id).values({column.name: column + n})


def _held(claim: ClaimedLine) -> tuple[Any, ...]:
    """The line of `claim`, while that claim still holds it (its lease, still running)."""
    return (
        lines_t.c.batch_id == claim.batch_id,
        lines_t.c.line == claim.line,
        lines_t.c.lease == claim.lease,
        lines_t.c.state == "running",
    )

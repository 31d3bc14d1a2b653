"""Batches and their lines, always read for one account by the API (another account's batch is
never found: the caller answers 404), and claimed by the runners of every replica.

A line's life: `pending` → `running` (a claim: `lease` + 1, the claimer's name and a deadline)
→ `done` with its `outcome` and `result`. Its result is written once, guarded by the lease its
claim took: with its settlement (billing: storage/batch_sql.py), or alone (`write_result`, for
a line that never reached admission). A claim whose deadline passed (its process died, or
stopped renewing) is claimed again by anyone; the old claimant's late write then finds another
lease and changes nothing. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, so two replicas
never wait on, nor take, the same rows; SQLite has one writer at a time.

A batch row is leased the same way (`lease_owner`, `lease_until`) by the replica validating
or finalizing it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import LargeBinary, and_, cast, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tokendock.storage import quota
from tokendock.storage.batch_claims import LineClaims
from tokendock.storage.ids import plain
from tokendock.storage.tables import batch_lines as lines_t
from tokendock.storage.tables import batches as t

PAGE = 1000  # lines read at a time (results, files)
INSERT_PAGE = 500  # lines inserted per statement


def now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    account_id: int
    key_id: int
    api: str
    endpoint: str
    model: str | None
    input_file_id: str | None
    completion_window: str
    metadata: str | None
    status: str
    errors: str | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    succeeded: int
    errored: int
    canceled: int
    expired: int
    cost: int
    created_at: datetime
    expires_at: datetime
    times: dict[str, datetime | None]  # in_progress_at, finalizing_at, … (None: not yet)

    @property
    def done(self) -> int:
        return self.succeeded + self.errored + self.canceled + self.expired


TIMES = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _row(r: Any) -> BatchRow:
    m = r._mapping
    return BatchRow(
        id=m["id"],
        account_id=m["account_id"],
        key_id=m["key_id"],
        api=m["api"],
        endpoint=m["endpoint"],
        model=m["model"],
        input_file_id=m["input_file_id"],
        completion_window=m["completion_window"],
        metadata=m["metadata"],
        status=m["status"],
        errors=m["errors"],
        output_file_id=m["output_file_id"],
        error_file_id=m["error_file_id"],
        total=m["total"],
        succeeded=m["succeeded"],
        errored=m["errored"],
        canceled=m["canceled"],
        expired=m["expired"],
        cost=m["cost"],
        created_at=_utc(m["created_at"]) or now(),
        expires_at=_utc(m["expires_at"]) or now(),
        times={k: _utc(m[k]) for k in TIMES},
    )


@dataclass(frozen=True, slots=True)
class DoneLine:
    line: int
    custom_id: str
    outcome: str
    result: str | None


class BatchStore(LineClaims):
    """Batches and their lines; claiming lines is LineClaims' (storage/batch_claims.py)."""

    # -- the API's side -----------------------------------------------------------------

    async def create(
        self,
        values: dict[str, Any],
        lines: Sequence[tuple[str, str]] = (),
        *,
        limit: int | None = None,
    ) -> None:
        """A new batch; with `lines` ((custom_id, body) each), those too, in one transaction —
        their bytes counted in the account's storage (QuotaExceeded past `limit`)."""
        async with self._engine.begin() as conn:
            await conn.execute(insert(t).values(**values))
            for start in range(0, len(lines), INSERT_PAGE):
                page = lines[start : start + INSERT_PAGE]
                await self._insert(conn, values["id"], values["account_id"], start, page, limit)

    async def _insert(
        self,
        conn: AsyncConnection,
        batch_id: str,
        account_id: int,
        start: int,
        lines: Sequence[tuple[str, str]],
        limit: int | None,
    ) -> None:
        await quota.add(conn, account_id, sum(quota.size_of(c, b) for c, b in lines), limit=limit)
        await conn.execute(
            insert(lines_t),
            [
                {
                    "batch_id": batch_id,
                    "line": start + i,
                    "custom_id": cid,
                    "body": body,
                    "state": "pending",
                }
                for i, (cid, body) in enumerate(lines)
            ],
        )

    async def get(self, account_id: int, batch_id: str, api: str | None = None) -> BatchRow | None:
        if not plain(batch_id):
            return None
        query = select(t).where(t.c.id == batch_id, t.c.account_id == account_id)
        if api is not None:
            query = query.where(t.c.api == api)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _row(row)

    async def page(
        self, account_id: int, api: str, after: str | None, limit: int, *, before: str | None = None
    ) -> list[BatchRow]:
        """Newest first: the account's batches after (older than) `after`, or before (newer
        than) `before`, at most `limit` (ids are not ordered: the anchor's time is looked up)."""
        query = select(t).where(t.c.account_id == account_id, t.c.api == api)
        anchor = after or before
        if anchor is not None and not plain(anchor):
            return []
        if anchor is not None:
            async with self._reader.connect() as conn:
                got = (
                    await conn.execute(
                        select(t.c.created_at).where(t.c.id == anchor, t.c.account_id == account_id)
                    )
                ).first()
            if got is None:
                return []
            at = got[0]
            if after is not None:
                query = query.where(
                    or_(t.c.created_at < at, and_(t.c.created_at == at, t.c.id < anchor))
                )
            else:
                query = query.where(
                    or_(t.c.created_at > at, and_(t.c.created_at == at, t.c.id > anchor))
                )
        if before is not None:
            query = query.order_by(t.c.created_at.asc(), t.c.id.asc()).limit(limit)
        else:
            query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
        async with self._reader.connect() as conn:
            rows = [_row(r) for r in await conn.execute(query)]
        return rows[::-1] if before is not None else rows

    async def of_account(self, account_id: int, after: str | None, limit: int) -> list[BatchRow]:
        """Newest first: the account's batches of both APIs (the dashboard's list), older than
        `after` when given (none when `after` is not the account's), at most `limit`."""
        query = select(t).where(t.c.account_id == account_id)
        if after is not None and not plain(after):
            return []
        async with self._reader.connect() as conn:
            if after is not None:
                at = (
                    await conn.execute(
                        select(t.c.created_at).where(t.c.id == after, t.c.account_id == account_id)
                    )
                ).scalar()
                if at is None:
                    return []
                query = query.where(
                    or_(t.c.created_at < at, and_(t.c.created_at == at, t.c.id < after))
                )
            query = query.order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit)
            return [_row(r) for r in await conn.execute(query)]

    async def cancel(self, account_id: int, batch_id: str, api: str) -> BatchRow | None:
        """A batch still validating or running goes to `cancelling` (the runner ends it); any
        other is returned as it is. None: no such batch for this account."""
        if not plain(batch_id):
            return None
        async with self._engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    t.c.account_id == account_id,
                    t.c.api == api,
                    t.c.status.in_(("validating", "in_progress")),
                )
                .values(status="cancelling", cancelling_at=now())
            )
        return await self.get(account_id, batch_id, api)

    async def results(self, batch_id: str) -> AsyncIterator[DoneLine]:
        """Every line with its outcome, in line order, a page at a time."""
        after = -1
        while True:
            query = (
                select(lines_t.c.line, lines_t.c.custom_id, lines_t.c.outcome, lines_t.c.result)
                .where(lines_t.c.batch_id == batch_id, lines_t.c.line > after)
                .order_by(lines_t.c.line)
                .limit(PAGE)
            )
            async with self._reader.connect() as conn:
                rows = (await conn.execute(query)).all()
            for r in rows:
                yield DoneLine(r.line, r.custom_id, r.outcome or "", r.result)
            if len(rows) < PAGE:
                return
            after = rows[-1].line

    # -- the runner's side --------------------------------------------------------------

    async def with_status(self, *statuses: str) -> list[BatchRow]:
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                select(t).where(t.c.status.in_(statuses)).order_by(t.c.created_at)
            )
            return [_row(r) for r in rows]

    async def lease_batch(self, batch_id: str, status: str, owner: str, until: datetime) -> bool:
        """Take the batch for validating or finalizing, unless a live lease holds it."""
        at = now()
        async with self._engine.begin() as conn:
            done = await conn.execute(
                update(t)
                .where(
                    t.c.id == batch_id,
                    t.c.status == status,
                    or_(t.c.lease_until.is_(None), t.c.lease_until < at, t.c.lease_owner == owner),
                )
                .values(lease_owner=owner, lease_until=until)
            )
            return done.rowcount == 1

    async def move(
        self, batch_id: str, current: str, *, owner: str | None = None, **values: Any
    ) -> bool:
        """Set `values` (a new status …) of the batch while its status is `current`; with
        `owner`, only while that owner's lease holds. Whether it moved."""
        query = update(t).where(t.c.id == batch_id, t.c.status == current)
        if owner is not None:
            query = query.where(t.c.lease_owner == owner)
        async with self._engine.begin() as conn:
            return (await conn.execute(query.values(**values))).rowcount == 1

    async def add_lines(
        self,
        batch_id: str,
        account_id: int,
        start: int,
        lines: Sequence[tuple[str, str]],
        limit: int | None,
    ) -> None:
        """Lines of a batch being validated, counted in the account's storage (QuotaExceeded
        past `limit`: nothing of this page written)."""
        async with self._engine.begin() as conn:
            await self._insert(conn, batch_id, account_id, start, lines, limit)

    async def drop_lines(self, batch_id: str, account_id: int) -> None:
        """Lines a failed validation had inserted, and their bytes."""
        async with self._engine.begin() as conn:
            size = await self._size(conn, batch_id, lines_t.c.custom_id, lines_t.c.body)
            await conn.execute(delete(lines_t).where(lines_t.c.batch_id == batch_id))
            await quota.add(conn, account_id, -size)

    async def compact(self, batch_id: str, account_id: int, *, keep_results: bool) -> None:
        """A finished batch keeps what it is read for: its lines' bodies go (the input file
        still holds them), and their results too unless kept (`keep_results`: Anthropic's
        results are read from the lines; OpenAI's are in the output files, counted there).
        The account's storage counts what stays: custom ids and kept results."""
        async with self._engine.begin() as conn:
            body = await self._size(conn, batch_id, lines_t.c.body)
            results = await self._size(conn, batch_id, lines_t.c.result)
            values: dict[str, Any] = {"body": ""}
            if not keep_results:
                values["result"] = None
            await conn.execute(update(lines_t).where(lines_t.c.batch_id == batch_id).values(values))
            await quota.add(conn, account_id, (results if keep_results else 0) - body)

    async def delete(self, account_id: int, batch_id: str) -> bool:
        """An ended batch and its lines, their bytes freed. False: no such ended batch."""
        if not plain(batch_id):
            return False
        async with self._engine.begin() as conn:
            ended = await conn.execute(
                select(t.c.id).where(
                    t.c.id == batch_id,
                    t.c.account_id == account_id,
                    t.c.status.in_(("completed", "failed", "expired", "cancelled")),
                )
            )
            if ended.first() is None:
                return False
            size = await self._size(
                conn, batch_id, lines_t.c.custom_id, lines_t.c.body, lines_t.c.result
            )
            await conn.execute(delete(lines_t).where(lines_t.c.batch_id == batch_id))
            await conn.execute(delete(t).where(t.c.id == batch_id))
            await quota.add(conn, account_id, -size)
            return True

    async def _size(self, conn: AsyncConnection, batch_id: str, *columns: Any) -> int:
        """Σ UTF-8 bytes of these text columns over the batch's lines (NULL is 0)."""
        if self._pg:
            parts = [func.coalesce(func.octet_length(c), 0) for c in columns]
        else:  # SQLite: length() of a BLOB counts bytes
            parts = [func.coalesce(func.length(cast(c, LargeBinary)), 0) for c in columns]
        total: Any = parts[0]
        for part in parts[1:]:
            total = total + part
        got = await conn.execute(
            select(func.coalesce(func.sum(total), 0)).where(lines_t.c.batch_id == batch_id)
        )
        return int(got.scalar_one())

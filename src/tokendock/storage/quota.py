"""Bytes each account keeps stored: one `account_storage` row per account, `used` = Σ `size` of
its stored rows (responses, stored chat completions, and whatever stores objects next).

Invariants:
- `used` changes only inside the transaction that inserts, updates or deletes the stored row it
  accounts for (`add(conn, …)`): a rolled-back insert never counts, a delete frees exactly the
  row's recorded `size`, so the counter never drifts from the rows.
- Every change is one atomic statement on the account's row (an upsert, or a conditional
  UPDATE), so concurrent writers on any replica never lose each other's bytes; `add(…, limit=)`
  refuses (QuotaExceeded, the caller's transaction rolls back) rather than pass the limit.
- `used >= 0` (CHECK); a decrement is clamped at 0.
"""

from __future__ import annotations

from sqlalchemy import case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from tokendock.storage.db import reader
from tokendock.storage.tables import account_storage as t


class QuotaExceeded(Exception):
    """Adding these bytes would take the account past its limit; nothing was added."""

    def __init__(self, used: int, limit: int):
        super().__init__(f"{used} of {limit} bytes used")
        self.used = used
        self.limit = limit


def size_of(*texts: str | None) -> int:
    """The bytes a row's stored text columns take (UTF-8; NULL is 0)."""
    return sum(len(text.encode()) for text in texts if text is not None)


async def add(
    conn: AsyncConnection, account_id: int, delta: int, *, limit: int | None = None
) -> None:
    """Change the account's counter by `delta` bytes, in the caller's transaction. With
    `limit` (a positive delta only): QuotaExceeded when the total would pass it."""
    if delta == 0:
        return
    if delta < 0:
        await conn.execute(
            update(t)
            .where(t.c.account_id == account_id)
            .values(used=case((t.c.used > -delta, t.c.used + delta), else_=0))
        )
        return
    if limit is None:
        await conn.execute(_upsert(conn, account_id, delta))
        return
    if delta > limit:
        raise QuotaExceeded(await _used(conn, account_id), limit)
    # The row must exist for the conditional UPDATE to be the one atomic step.
    await conn.execute(_upsert(conn, account_id, 0))
    done = await conn.execute(
        update(t)
        .where(t.c.account_id == account_id, t.c.used + delta <= limit)
        .values(used=t.c.used + delta)
    )
    if not done.rowcount:
        raise QuotaExceeded(await _used(conn, account_id), limit)


def _upsert(conn: AsyncConnection, account_id: int, delta: int) -> Insert:
    """INSERT … ON CONFLICT (account_id) DO UPDATE SET used = used + delta (both databases)."""
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(t).values(account_id=account_id, used=delta)
        return pg.on_conflict_do_update(
            index_elements=[t.c.account_id], set_={"used": t.c.used + pg.excluded.used}
        )
    lite = sqlite.insert(t).values(account_id=account_id, used=delta)
    return lite.on_conflict_do_update(
        index_elements=[t.c.account_id], set_={"used": t.c.used + lite.excluded.used}
    )


async def _used(conn: AsyncConnection, account_id: int) -> int:
    found = (await conn.execute(select(t.c.used).where(t.c.account_id == account_id))).scalar()
    return int(found or 0)


class StorageUsage:
    """Reads of the counters (one primary-key lookup each), outside any write."""

    def __init__(self, engine: AsyncEngine):
        self._reader = reader(engine)

    async def used(self, account_id: int) -> int:
        async with self._reader.connect() as conn:
            return await _used(conn, account_id)

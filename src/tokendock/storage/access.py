"""The `access_events` table: one row per change of who may run work (an account disabled,
deleted or enabled again; a key revoked), written in the transaction that makes the change, read
by every replica past the last id it has seen (services/access.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.storage.tables import access_events

BATCH = 500  # rows read per poll at most; the rest come with the next one


@dataclass(frozen=True, slots=True)
class AccessEvent:
    id: int
    account_id: int
    key_id: int | None
    reason: str


async def record(conn: AsyncConnection, account_id: int, key_id: int | None, reason: str) -> None:
    """Within the caller's transaction: the change is seen by every replica iff it commits."""
    await conn.execute(
        insert(access_events).values(
            account_id=account_id, key_id=key_id, reason=reason, at=datetime.now(UTC)
        )
    )


class AccessEventStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def latest(self) -> int:
        """The id of the newest change (0 when none): where a starting process begins."""
        async with self._engine.connect() as conn:
            found = (await conn.execute(select(func.max(access_events.c.id)))).scalar_one()
        return int(found or 0)

    async def since(self, last_id: int) -> list[AccessEvent]:
        """The changes after `last_id`, oldest first (a primary-key range: one cheap read)."""
        query = (
            select(
                access_events.c.id,
                access_events.c.account_id,
                access_events.c.key_id,
                access_events.c.reason,
            )
            .where(access_events.c.id > last_id)
            .order_by(access_events.c.id)
            .limit(BATCH)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AccessEvent(r.id, r.account_id, r.key_id, r.reason) for r in rows]

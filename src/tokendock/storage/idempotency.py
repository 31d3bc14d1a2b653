"""Stored outcomes of requests sent with an `Idempotency-Key` header, per API key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.accounts import utc
from tokendock.storage.tables import idempotent_requests as t


@dataclass(frozen=True, slots=True)
class Record:
    body_digest: str
    status: str  # running, done, stream
    response_status: int | None
    response_body: bytes | None
    created_at: datetime


class IdempotencyStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine

    async def claim(self, key_id: int, idem: str, body_digest: str) -> Record | None:
        """Insert a `running` record; None when this call claimed it, else the existing one."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(t).values(
                        key_id=key_id,
                        idempotency_key=idem,
                        body_digest=body_digest,
                        status="running",
                        created_at=datetime.now(UTC),
                    )
                )
            return None
        except IntegrityError:
            pass
        async with self._engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(t).where(t.c.key_id == key_id, t.c.idempotency_key == idem)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:  # deleted in between: let the caller try again
            return await self.claim(key_id, idem, body_digest)
        return Record(
            row["body_digest"],
            row["status"],
            row["response_status"],
            row["response_body"],
            utc(row["created_at"]),  # type: ignore[arg-type]
        )

    async def finish(
        self, key_id: int, idem: str, status: str, code: int, body: bytes | None
    ) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.key_id == key_id, t.c.idempotency_key == idem)
                .values(status=status, response_status=code, response_body=body)
            )

    async def forget(self, key_id: int, idem: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(t).where(t.c.key_id == key_id, t.c.idempotency_key == idem))

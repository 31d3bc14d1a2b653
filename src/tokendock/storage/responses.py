"""Stored responses of the Responses API, always read and written for one account: a response
of another account is never found (the caller answers 404, never 403).

Each row records its `size` (the bytes of its JSON text) and changes the account's storage
counter by it in the same transaction (storage/quota.py): an insert adds it, an update the
difference, a delete frees it.

`also`: a write made in the same transaction (a response in a conversation appends its input
and output items to it: storage/conversations.py `append_in`), so the response and its turn in
the conversation are stored together or not at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.protocol.response_shapes import ResponseRecord
from tokendock.storage import quota
from tokendock.storage.db import reader
from tokendock.storage.tables import responses as t

RUNNING = ("queued", "in_progress")
ENDING = (*RUNNING, "cancelled")  # what a background task's final write may replace
Also = Callable[[AsyncConnection], Awaitable[Any]]


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _load(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _fixed(rec: ResponseRecord) -> dict[str, Any]:
    """The text columns written once, at insert."""
    return {
        "request": _dump(rec.request),
        "input_items": _dump(rec.input_items),
        "context": _dump(rec.context),
        "metadata": None if rec.metadata is None else _dump(rec.metadata),
    }


def _values(rec: ResponseRecord) -> dict[str, Any]:
    return {
        "status": rec.status,
        "output": _dump(rec.output),
        "usage": None if rec.usage is None else _dump(rec.usage),
        "error": None if rec.error is None else _dump(rec.error),
        "incomplete_reason": rec.incomplete_reason,
    }


def _size(fixed: dict[str, Any], values: dict[str, Any]) -> int:
    return quota.size_of(*fixed.values(), values["output"], values["usage"], values["error"])


def stored_size(rec: ResponseRecord) -> int:
    """The bytes the record would take stored as it is now."""
    return _size(_fixed(rec), _values(rec))


class ResponseStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def insert(
        self, rec: ResponseRecord, *, limit: int | None = None, also: Also | None = None
    ) -> None:
        """Store the record and count its bytes; `limit`: the account's storage quota, which
        this insert may not pass (QuotaExceeded, nothing stored)."""
        fixed, values = _fixed(rec), _values(rec)
        size = _size(fixed, values)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(t).values(
                    id=rec.id,
                    account_id=rec.account_id,
                    model=rec.model,
                    background=rec.background,
                    created_at=datetime.fromtimestamp(rec.created_at, UTC),
                    previous_response_id=rec.previous_response_id,
                    size=size,
                    **fixed,
                    **values,
                )
            )
            await quota.add(conn, rec.account_id, size, limit=limit)
            if also is not None:
                await also(conn)

    async def update(
        self,
        rec: ResponseRecord,
        *,
        only_running: bool = False,
        ending: bool = False,
        also: Also | None = None,
    ) -> bool:
        """Write the record's status, output and usage; `only_running`: unless it has already
        ended (e.g. cancelled meanwhile); `ending` (a background task's final state, the truth
        of what was generated and billed): also over a `cancelled` another replica wrote.
        False when no row was changed."""
        where = [t.c.id == rec.id, t.c.account_id == rec.account_id]
        if ending:
            where.append(t.c.status.in_(ENDING))
        elif only_running:
            where.append(t.c.status.in_(RUNNING))
        values = _values(rec)
        size = _size(_fixed(rec), values)
        async with self._engine.begin() as conn:
            # The old size under the row's lock (SQLite: the write lock taken at BEGIN).
            query = select(t.c.size).where(*where).with_for_update()
            old = (await conn.execute(query)).scalar()
            if old is None:
                return False
            await conn.execute(update(t).where(*where).values(size=size, **values))
            await quota.add(conn, rec.account_id, size - old)
            if also is not None:
                await also(conn)
        return True

    async def status(self, account_id: int, response_id: str) -> str | None:
        """The stored status alone (one primary-key read); None once deleted."""
        query = select(t.c.status).where(t.c.id == response_id, t.c.account_id == account_id)
        async with self._reader.connect() as conn:
            found: str | None = (await conn.execute(query)).scalar_one_or_none()
        return found

    async def get(self, account_id: int, response_id: str) -> ResponseRecord | None:
        query = select(t).where(t.c.id == response_id, t.c.account_id == account_id)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        created = row["created_at"]
        if created.tzinfo is None:  # SQLite keeps the fields as given (UTC)
            created = created.replace(tzinfo=UTC)
        return ResponseRecord(
            id=row["id"],
            account_id=row["account_id"],
            model=row["model"],
            created_at=int(created.timestamp()),
            status=row["status"],
            background=bool(row["background"]),
            previous_response_id=row["previous_response_id"],
            request=_load(row["request"]),
            input_items=_load(row["input_items"]),
            context=_load(row["context"]),
            output=_load(row["output"]),
            usage=_load(row["usage"]),
            metadata=_load(row["metadata"]),
            error=_load(row["error"]),
            incomplete_reason=row["incomplete_reason"],
        )

    async def delete(self, account_id: int, response_id: str) -> bool:
        """Delete the response and free its bytes; False when the account has no such one."""
        where = (t.c.id == response_id, t.c.account_id == account_id)
        async with self._engine.begin() as conn:
            size = (await conn.execute(select(t.c.size).where(*where).with_for_update())).scalar()
            if size is None:
                return False
            await conn.execute(delete(t).where(*where))
            await quota.add(conn, account_id, -size)
        return True

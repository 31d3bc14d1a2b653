"""Stored chat completions (`store: true`), per account: the request's messages, the whole
completion object, the metadata (a JSON copy on the row, and one pair a row for the filters).
Every query names the account: another account's id is simply not found. Each row records its
`size` (bytes of its JSON text) and changes the account's storage counter by it in the same
transaction (storage/quota.py): insert adds, a metadata change adjusts, delete frees."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import RowMapping, and_, delete, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage import quota
from tokendock.storage.db import reader
from tokendock.storage.tables import stored_chat_completions as t
from tokendock.storage.tables import stored_chat_metadata as m


@dataclass(frozen=True, slots=True)
class StoredChat:
    id: str
    account_id: int
    key_id: int | None
    model: str
    meta: str | None  # JSON object text
    messages: str  # JSON array text
    completion: str  # JSON object text
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[StoredChat]
    has_more: bool


class UnknownCursor(Exception):
    """`after` names no stored chat completion of this account."""


def _storable(*texts: str | None) -> bool:
    """No stored text has a NUL character (PostgreSQL refuses them even in a query)."""
    return not any(t is not None and "\x00" in t for t in texts)


class StoredChatStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def insert(self, row: StoredChat, meta: Mapping[str, str]) -> None:
        size = quota.size_of(row.meta, row.messages, row.completion)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(t).values(
                    id=row.id,
                    account_id=row.account_id,
                    key_id=row.key_id,
                    model=row.model,
                    meta=row.meta,
                    messages=row.messages,
                    completion=row.completion,
                    created_at=row.created_at,
                    size=size,
                )
            )
            await quota.add(conn, row.account_id, size)
            assert result.inserted_primary_key is not None
            seq = result.inserted_primary_key[0]
            if meta:
                await conn.execute(
                    insert(m), [{"seq": seq, "key": k, "value": v} for k, v in meta.items()]
                )

    async def get(self, account_id: int, chat_id: str) -> StoredChat | None:
        if not _storable(chat_id):
            return None
        query = select(t).where(t.c.id == chat_id, t.c.account_id == account_id)
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _stored(row)

    async def page(
        self,
        account_id: int,
        *,
        model: str | None,
        meta: Mapping[str, str],
        after: str | None,
        limit: int,
        descending: bool,
    ) -> Page:
        """Up to `limit` of the account's stored completions in creation order (or its
        reverse), after the one named `after`, of `model`, with every `meta` pair."""
        if not _storable(after):
            raise UnknownCursor(after)
        if not _storable(model, *meta, *meta.values()):
            return Page([], False)
        query = select(t).where(t.c.account_id == account_id)
        async with self._reader.connect() as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(t.c.seq).where(t.c.id == after, t.c.account_id == account_id)
                    )
                ).scalar()
                if cursor is None:
                    raise UnknownCursor(after)
                query = query.where(t.c.seq < cursor if descending else t.c.seq > cursor)
            if model is not None:
                query = query.where(t.c.model == model)
            for key, value in meta.items():
                pair = and_(m.c.seq == t.c.seq, m.c.key == key, m.c.value == value)
                query = query.where(exists().where(pair))
            query = query.order_by(t.c.seq.desc() if descending else t.c.seq).limit(limit + 1)
            rows = (await conn.execute(query)).mappings().all()
        return Page([_stored(r) for r in rows[:limit]], len(rows) > limit)

    async def set_metadata(
        self, account_id: int, chat_id: str, meta_json: str | None, meta: Mapping[str, str]
    ) -> bool:
        """Replace the metadata; False when the account has no such completion."""
        if not _storable(chat_id):
            return False
        async with self._engine.begin() as conn:
            found = (
                await conn.execute(
                    select(t.c.seq, t.c.meta, t.c.size)
                    .where(t.c.id == chat_id, t.c.account_id == account_id)
                    .with_for_update()
                )
            ).first()
            if found is None:
                return False
            seq, old_meta, old_size = found
            size = old_size - quota.size_of(old_meta) + quota.size_of(meta_json)
            await conn.execute(update(t).where(t.c.seq == seq).values(meta=meta_json, size=size))
            await quota.add(conn, account_id, size - old_size)
            await conn.execute(delete(m).where(m.c.seq == seq))
            if meta:
                await conn.execute(
                    insert(m), [{"seq": seq, "key": k, "value": v} for k, v in meta.items()]
                )
        return True

    async def delete(self, account_id: int, chat_id: str) -> bool:
        if not _storable(chat_id):
            return False
        async with self._engine.begin() as conn:
            found = (
                await conn.execute(
                    select(t.c.seq, t.c.size)
                    .where(t.c.id == chat_id, t.c.account_id == account_id)
                    .with_for_update()
                )
            ).first()
            if found is None:
                return False
            seq, size = found
            await conn.execute(delete(m).where(m.c.seq == seq))
            await conn.execute(delete(t).where(t.c.seq == seq))
            await quota.add(conn, account_id, -size)
        return True


def _stored(row: RowMapping) -> StoredChat:
    return StoredChat(
        row["id"],
        row["account_id"],
        row["key_id"],
        row["model"],
        row["meta"],
        row["messages"],
        row["completion"],
        row["created_at"],
    )

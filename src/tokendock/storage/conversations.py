"""Conversations of the Conversations API and their items, always read and written for one
account: another account's conversation is never found (the caller answers 404).

Each conversation row and each item row records its `size` (the bytes of its JSON text) and
changes the account's storage counter by it in the same transaction (storage/quota.py): adding
items adds their bytes (refused atomically over `limit`, nothing added), a delete frees them.
A conversation's items are ordered by `seq` (one sequence for the table); an item id is not
unique within a conversation (a client may append an item it was given back): a lookup by id
reads the first, a delete removes every item with that id.

Ids and cursors reach these queries only once checked (services/conversations.py: ids of
[A-Za-z0-9_-], at most 64): a NUL never reaches PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.storage import quota
from tokendock.storage.db import reader
from tokendock.storage.tables import conversation_items as items_t
from tokendock.storage.tables import conversations as conv_t

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ConversationRow:
    id: str
    account_id: int
    created_at: int  # Unix seconds
    metadata: dict[str, str] | None


class UnknownCursor(Exception):
    """A list's `after` names no item of the conversation."""


def _dump(value: Any) -> str:
    return orjson.dumps(value).decode()


def _meta_text(meta: dict[str, str] | None) -> str | None:
    return None if meta is None else _dump(meta)


def _item_rows(conversation_id: str, items: list[JSON]) -> list[JSON]:
    rows = []
    for item in items:
        text = _dump(item)
        rows.append(
            {
                "conversation_id": conversation_id,
                "id": item["id"],
                "item": text,
                "size": quota.size_of(text),
            }
        )
    return rows


def items_size(items: list[JSON]) -> int:
    """The bytes these items take stored."""
    return sum(quota.size_of(_dump(item)) for item in items)


def _row(found: Any) -> ConversationRow:
    created = found.created_at
    if created.tzinfo is None:  # SQLite keeps the fields as given (UTC)
        created = created.replace(tzinfo=UTC)
    meta = None if found.metadata is None else orjson.loads(found.metadata)
    return ConversationRow(found.id, found.account_id, int(created.timestamp()), meta)


def _own(account_id: int, conversation_id: str) -> Any:
    return (conv_t.c.id == conversation_id, conv_t.c.account_id == account_id)


class ConversationStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def create(
        self,
        row: ConversationRow,
        items: list[JSON],
        *,
        limit: int | None = None,
    ) -> None:
        """The conversation and its first items, counted; QuotaExceeded (nothing stored) when
        they would pass `limit`."""
        meta = _meta_text(row.metadata)
        size = quota.size_of(meta)
        rows = _item_rows(row.id, items)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(conv_t).values(
                    id=row.id,
                    account_id=row.account_id,
                    created_at=datetime.fromtimestamp(row.created_at, UTC),
                    metadata=meta,
                    size=size,
                )
            )
            if rows:
                await conn.execute(insert(items_t), rows)
            await quota.add(conn, row.account_id, size + sum(r["size"] for r in rows), limit=limit)

    async def get(self, account_id: int, conversation_id: str) -> ConversationRow | None:
        async with self._reader.connect() as conn:
            found = await conn.execute(select(conv_t).where(*_own(account_id, conversation_id)))
            first = found.first()
        return None if first is None else _row(first)

    async def set_metadata(
        self,
        account_id: int,
        conversation_id: str,
        meta: dict[str, str] | None,
        *,
        limit: int | None = None,
    ) -> bool:
        """Replace the conversation's metadata (the difference in bytes counted); False when
        the account has no such conversation."""
        text = _meta_text(meta)
        where = _own(account_id, conversation_id)
        async with self._engine.begin() as conn:
            old = await conn.execute(select(conv_t.c.size).where(*where).with_for_update())
            size = old.scalar()
            if size is None:
                return False
            new = quota.size_of(text)
            await conn.execute(update(conv_t).where(*where).values(metadata=text, size=new))
            await quota.add(conn, account_id, new - size, limit=limit if new > size else None)
        return True

    async def delete(self, account_id: int, conversation_id: str) -> bool:
        """The conversation and its items, their bytes freed; False when not the account's."""
        where = _own(account_id, conversation_id)
        async with self._engine.begin() as conn:
            size = await conn.execute(select(conv_t.c.size).where(*where).with_for_update())
            own = size.scalar()
            if own is None:
                return False
            mine = items_t.c.conversation_id == conversation_id
            held = select(func.coalesce(func.sum(items_t.c.size), 0)).where(mine)
            total = int(own) + int((await conn.execute(held)).scalar_one())
            await conn.execute(delete(items_t).where(mine))
            await conn.execute(delete(conv_t).where(*where))
            await quota.add(conn, account_id, -total)
        return True

    async def append(
        self,
        account_id: int,
        conversation_id: str,
        items: list[JSON],
        *,
        limit: int | None = None,
    ) -> bool:
        """Add items at the end; QuotaExceeded (nothing added) over `limit`; False when the
        account has no such conversation."""
        async with self._engine.begin() as conn:
            return await append_in(conn, account_id, conversation_id, items, limit=limit)

    async def recent(
        self, account_id: int, conversation_id: str, *, max_items: int, max_bytes: int
    ) -> tuple[list[JSON], bool] | None:
        """The newest items, oldest first, at most `max_items` of at most `max_bytes` in all
        (two bounded reads: sizes, then those items' text); True when older ones were left
        out. None when the account has no such conversation."""
        mine = items_t.c.conversation_id == conversation_id
        async with self._reader.connect() as conn:
            if not await _exists(conn, account_id, conversation_id):
                return None
            sizes = await conn.execute(
                select(items_t.c.seq, items_t.c.size)
                .where(mine)
                .order_by(items_t.c.seq.desc())
                .limit(max_items + 1)
            )
            taken: list[int] = []
            total = 0
            left_out = False
            for seq, size in sizes.all():
                if len(taken) == max_items or total + size > max_bytes:
                    left_out = True
                    break
                taken.append(seq)
                total += size
            if not taken:
                return [], left_out
            query = (
                select(items_t.c.item)
                .where(mine, items_t.c.seq >= taken[-1], items_t.c.seq <= taken[0])
                .order_by(items_t.c.seq)
            )
            texts = (await conn.execute(query)).scalars().all()
        return [orjson.loads(text) for text in texts], left_out

    async def page(
        self,
        account_id: int,
        conversation_id: str,
        *,
        after: str | None,
        limit: int,
        order: str,
    ) -> tuple[list[JSON], bool] | None:
        """One page of items in `order` ("asc": oldest first) after the item `after`, and
        whether more follow. None when not the account's; UnknownCursor for a bad `after`."""
        mine = items_t.c.conversation_id == conversation_id
        newest_first = order == "desc"
        async with self._reader.connect() as conn:
            if not await _exists(conn, account_id, conversation_id):
                return None
            query = select(items_t.c.item).where(mine)
            if after is not None:
                cursor = select(items_t.c.seq).where(mine, items_t.c.id == after)
                seq = (await conn.execute(cursor.order_by(items_t.c.seq).limit(1))).scalar()
                if seq is None:
                    raise UnknownCursor(after)
                query = query.where(items_t.c.seq < seq if newest_first else items_t.c.seq > seq)
            ordering = items_t.c.seq.desc() if newest_first else items_t.c.seq
            texts = (await conn.execute(query.order_by(ordering).limit(limit + 1))).scalars()
            found = [orjson.loads(text) for text in texts.all()]
        return found[:limit], len(found) > limit

    async def item(self, account_id: int, conversation_id: str, item_id: str) -> JSON | None:
        query = (
            select(items_t.c.item)
            .join(conv_t, conv_t.c.id == items_t.c.conversation_id)
            .where(*_own(account_id, conversation_id), items_t.c.id == item_id)
            .order_by(items_t.c.seq)
            .limit(1)
        )
        async with self._reader.connect() as conn:
            text = (await conn.execute(query)).scalar()
        return None if text is None else dict(orjson.loads(text))

    async def delete_item(self, account_id: int, conversation_id: str, item_id: str) -> bool:
        """Delete the conversation's items with this id, their bytes freed; False when none."""
        where = (items_t.c.conversation_id == conversation_id, items_t.c.id == item_id)
        async with self._engine.begin() as conn:
            own = select(conv_t.c.id).where(*_own(account_id, conversation_id)).with_for_update()
            if (await conn.execute(own)).first() is None:
                return False
            held = select(func.coalesce(func.sum(items_t.c.size), 0), func.count()).where(*where)
            size, count = (await conn.execute(held)).one()
            if not count:
                return False
            await conn.execute(delete(items_t).where(*where))
            await quota.add(conn, account_id, -int(size))
        return True


async def _exists(conn: AsyncConnection, account_id: int, conversation_id: str) -> bool:
    query = select(conv_t.c.id).where(*_own(account_id, conversation_id))
    return (await conn.execute(query)).first() is not None


async def append_in(
    conn: AsyncConnection,
    account_id: int,
    conversation_id: str,
    items: list[JSON],
    *,
    limit: int | None = None,
) -> bool:
    """`append` in the caller's transaction (a response stored with its conversation's new
    items: storage/responses.py). False, nothing added, when the conversation is gone."""
    own = select(conv_t.c.id).where(*_own(account_id, conversation_id)).with_for_update()
    if (await conn.execute(own)).first() is None:
        return False
    rows = _item_rows(conversation_id, items)
    if rows:
        await conn.execute(insert(items_t), rows)
        await quota.add(conn, account_id, sum(r["size"] for r in rows), limit=limit)
    return True


def appending(
    account_id: int, conversation_id: str, items: list[JSON]
) -> Callable[[AsyncConnection], Awaitable[bool]]:
    """`append_in` of these items, to run in another store's transaction."""

    async def append(conn: AsyncConnection) -> bool:
        return await append_in(conn, account_id, conversation_id, items)

    return append

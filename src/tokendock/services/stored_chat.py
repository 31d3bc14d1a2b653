"""Stored chat completions: `store: true` keeps a chat completion's request messages, its whole
answer and its metadata for the key's ACCOUNT; the account lists, reads, relabels and deletes
them. Another account's id is not found (404), never forbidden: a 403 would confirm it exists.

`keep` runs once the answer is complete (web/api/respond.py: where the idempotency store writes
a whole answer; after `[DONE]` for a stream). Its write is a tracked task the caller's
cancellation (the client leaving after `[DONE]`) does not stop, which `drain()` waits for at
shutdown; a failure is logged with the completion's id, never raised. Requests without `store`
never reach this module.

Every stored completion counts against the account's storage quota (services/storage.py):
`check_quota` before admission refuses a request whose messages would pass it; an answer
already paid for is always kept. Deleting one frees its bytes. An id that is not an id (a NUL,
a character outside [A-Za-z0-9_-], over 64 characters) is not found before any query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from tokendock.errors import InvalidRequest, NotFound
from tokendock.protocol.stored import deleted, is_object_id, page, store_message
from tokendock.services.storage import StorageQuota
from tokendock.storage.accounts import KeyRow
from tokendock.storage.quota import size_of
from tokendock.storage.stored_chat import StoredChat, StoredChatStore, UnknownCursor

log = logging.getLogger(__name__)

JSON = dict[str, Any]


class StoredChats:
    def __init__(self, store: StoredChatStore, quota: StorageQuota):
        self._store = store
        self.quota = quota
        self._writing: set[asyncio.Future[None]] = set()

    async def check_quota(
        self, account_id: int, messages: str, meta: Mapping[str, str] | None
    ) -> None:
        """Before admission: a 400 `storage_quota_exceeded` when keeping these messages (JSON
        text) and metadata would pass the account's quota."""
        await self.quota.check(account_id, size_of(messages, _meta_text(meta)))

    async def keep(
        self, key: KeyRow, messages: str, meta: Mapping[str, str] | None, completion: JSON
    ) -> None:
        """Store a finished completion (`messages`: the request's, as JSON text); done when it
        is written (or its failure logged)."""
        writing = asyncio.ensure_future(self._write(key, messages, meta, completion))
        self._writing.add(writing)
        writing.add_done_callback(self._writing.discard)
        await asyncio.shield(writing)

    async def drain(self) -> None:
        """Wait for the writes still running (at shutdown)."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _write(
        self, key: KeyRow, messages: str, meta: Mapping[str, str] | None, completion: JSON
    ) -> None:
        chat_id = str(completion.get("id", ""))
        try:
            row = StoredChat(
                id=chat_id,
                account_id=key.account_id,
                key_id=key.id,
                model=str(completion.get("model", "")),
                meta=_meta_text(meta),
                messages=messages,
                completion=orjson.dumps(completion).decode(),
                created_at=datetime.now(UTC),
            )
            await self._store.insert(row, meta or {})
        except Exception:
            log.exception("the stored chat completion %s could not be written", chat_id)

    async def get(self, key: KeyRow, chat_id: str) -> JSON:
        row = await self._store.get(key.account_id, chat_id) if is_object_id(chat_id) else None
        if row is None:
            raise _not_found(chat_id)
        return _completion(row)

    async def list(
        self,
        key: KeyRow,
        *,
        model: str | None = None,
        meta: Mapping[str, str] | None = None,
        after: str | None = None,
        limit: int = 20,
        order: str = "asc",
    ) -> JSON:
        try:
            found = await self._store.page(
                key.account_id,
                model=model,
                meta=meta or {},
                after=after,
                limit=limit,
                descending=order == "desc",
            )
        except UnknownCursor:
            raise InvalidRequest(
                f"Invalid 'after': no stored chat completion has the id '{after}'.",
                param="after",
            ) from None
        return page([_completion(r) for r in found.rows], found.has_more)

    async def update(self, key: KeyRow, chat_id: str, meta: Mapping[str, str] | None) -> JSON:
        if not is_object_id(chat_id):
            raise _not_found(chat_id)
        if not await self._store.set_metadata(
            key.account_id, chat_id, _meta_text(meta), meta or {}
        ):
            raise _not_found(chat_id)
        return await self.get(key, chat_id)

    async def delete(self, key: KeyRow, chat_id: str) -> JSON:
        if not is_object_id(chat_id) or not await self._store.delete(key.account_id, chat_id):
            raise _not_found(chat_id)
        return deleted(chat_id)

    async def messages(
        self, key: KeyRow, chat_id: str, *, after: str | None, limit: int, order: str
    ) -> JSON:
        """The stored request's messages, a page at a time (ids `<completion id>-<index>`)."""
        row = await self._store.get(key.account_id, chat_id) if is_object_id(chat_id) else None
        if row is None:
            raise _not_found(chat_id)
        sent = orjson.loads(row.messages)
        items = [store_message(chat_id, i, msg) for i, msg in enumerate(sent)]
        if order == "desc":
            items.reverse()
        if after is not None:
            at = next((i for i, item in enumerate(items) if item["id"] == after), None)
            if at is None:
                raise InvalidRequest(
                    f"Invalid 'after': the chat completion has no message '{after}'.",
                    param="after",
                )
            items = items[at + 1 :]
        return page(items[:limit], len(items) > limit)


def _completion(row: StoredChat) -> JSON:
    completion: JSON = orjson.loads(row.completion)
    completion["metadata"] = {} if row.meta is None else orjson.loads(row.meta)
    return completion


def _meta_text(meta: Mapping[str, str] | None) -> str | None:
    return None if meta is None else orjson.dumps(dict(meta)).decode()


def _not_found(chat_id: str) -> NotFound:
    shown = chat_id[:80] if chat_id[:80].isprintable() else repr(chat_id[:80])[1:-1]
    return NotFound(f"No chat completion found with id '{shown}'.", param="completion_id")

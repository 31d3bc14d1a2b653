"""The Conversations API's service side: conversations and their items, per account (another
account's ids are not found: 404), and what `/v1/responses` reads of one (`prefix`).

Bounds: at most 20 items per create or append (protocol/stored.py), each as large as the body
limit lets it be; every byte stored counts against the account's storage quota, refused
atomically by the store (a 400 `storage_quota_exceeded`, the error stored responses give).
Ids and cursors are checked before any query (`is_object_id`): a NUL or any other odd string
names nothing.

A response's prompt reads at most what one request could send (MAX_MESSAGES items, at most
MAX_TEXT_CHARS bytes of stored JSON), newest first; an older remainder is left out only with
`truncation: "auto"`, else the request is refused (400 naming `conversation`) so that nothing
is silently forgotten — compact the conversation (/v1/responses/compact) to go on.
"""

from __future__ import annotations

import time
from typing import Any

from tokendock.errors import ContextLengthExceeded, InvalidRequest, NotFound
from tokendock.protocol.bounds import MAX_MESSAGES, MAX_TEXT_CHARS
from tokendock.protocol.response_shapes import JSON, new_id
from tokendock.protocol.stored import MAX_LIST, is_object_id, page
from tokendock.services.storage import StorageQuota
from tokendock.storage.conversations import (
    ConversationRow,
    ConversationStore,
    UnknownCursor,
    items_size,
)
from tokendock.storage.quota import QuotaExceeded


def conversation_object(row: ConversationRow) -> JSON:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": row.created_at,
        "metadata": row.metadata or {},
    }


def _shown(value: str) -> str:
    """An id as an error message repeats it: bounded, printable."""
    shown = value[:80]
    return shown if shown.isprintable() else repr(shown)[1:-1]


class Conversations:
    def __init__(self, store: ConversationStore, quota: StorageQuota):
        self.store = store
        self.quota = quota

    def _not_found(self, conversation_id: str, param: str | None = None) -> NotFound:
        return NotFound(f"No conversation found with id '{_shown(conversation_id)}'.", param=param)

    async def create(
        self, account_id: int, items: list[JSON], metadata: dict[str, str] | None
    ) -> JSON:
        row = ConversationRow(new_id("conv"), account_id, int(time.time()), metadata)
        try:
            await self.store.create(row, items, limit=self.quota.limit)
        except QuotaExceeded as exc:
            raise self.quota.refused(exc) from None
        return conversation_object(row)

    async def get(self, account_id: int, conversation_id: str, param: str | None = None) -> JSON:
        row = None
        if is_object_id(conversation_id):
            row = await self.store.get(account_id, conversation_id)
        if row is None:
            raise self._not_found(conversation_id, param)
        return conversation_object(row)

    async def update(
        self, account_id: int, conversation_id: str, metadata: dict[str, str] | None
    ) -> JSON:
        await self.get(account_id, conversation_id)
        try:
            done = await self.store.set_metadata(
                account_id, conversation_id, metadata, limit=self.quota.limit
            )
        except QuotaExceeded as exc:
            raise self.quota.refused(exc) from None
        if not done:
            raise self._not_found(conversation_id)
        return await self.get(account_id, conversation_id)

    async def delete(self, account_id: int, conversation_id: str) -> JSON:
        if not (
            is_object_id(conversation_id) and await self.store.delete(account_id, conversation_id)
        ):
            raise self._not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(self, account_id: int, conversation_id: str, items: list[JSON]) -> JSON:
        """Append items; the list of those added (OpenAI's ConversationItemList)."""
        await self.get(account_id, conversation_id)
        try:
            done = await self.store.append(
                account_id, conversation_id, items, limit=self.quota.limit
            )
        except QuotaExceeded as exc:
            raise self.quota.refused(exc) from None
        if not done:
            raise self._not_found(conversation_id)
        return page(items, False)

    async def items(
        self, account_id: int, conversation_id: str, *, after: str | None, limit: int, order: str
    ) -> dict[str, Any]:
        if not 1 <= limit <= MAX_LIST:
            raise InvalidRequest(f"Invalid 'limit': expected 1 to {MAX_LIST}.", param="limit")
        if after is not None and not is_object_id(after):
            raise InvalidRequest(f"Invalid 'after': no item '{_shown(after)}'.", param="after")
        found = None
        if is_object_id(conversation_id):
            try:
                found = await self.store.page(
                    account_id, conversation_id, after=after, limit=limit, order=order
                )
            except UnknownCursor:
                raise InvalidRequest(
                    f"Invalid 'after': no item '{_shown(after or '')}'.", param="after"
                ) from None
        if found is None:
            raise self._not_found(conversation_id)
        return page(*found)

    async def item(self, account_id: int, conversation_id: str, item_id: str) -> JSON:
        await self.get(account_id, conversation_id)
        found = None
        if is_object_id(item_id):
            found = await self.store.item(account_id, conversation_id, item_id)
        if found is None:
            raise NotFound(f"No item found with id '{_shown(item_id)}'.")
        return found

    async def delete_item(self, account_id: int, conversation_id: str, item_id: str) -> JSON:
        """Delete the item; OpenAI answers with the conversation."""
        conversation = await self.get(account_id, conversation_id)
        if not (
            is_object_id(item_id)
            and await self.store.delete_item(account_id, conversation_id, item_id)
        ):
            raise NotFound(f"No item found with id '{_shown(item_id)}'.")
        return conversation

    async def prefix(
        self, account_id: int, conversation_id: str, *, truncating: bool
    ) -> list[JSON]:
        """The conversation's items a response's prompt starts with (bounded, see above)."""
        found = None
        if is_object_id(conversation_id):
            found = await self.store.recent(
                account_id, conversation_id, max_items=MAX_MESSAGES, max_bytes=MAX_TEXT_CHARS
            )
        if found is None:
            raise self._not_found(conversation_id, "conversation")
        items, left_out = found
        if left_out and not truncating:
            raise ContextLengthExceeded(
                "The conversation is longer than one request may read; send "
                "'truncation': 'auto' to use its newest items, or compact it "
                "(POST /v1/responses/compact).",
                param="conversation",
            )
        return items

    async def check_quota(self, account_id: int, items: list[JSON]) -> None:
        """Before admission: a 400 when appending these items would pass the quota."""
        await self.quota.check(account_id, items_size(items))

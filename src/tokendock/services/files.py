"""Files: what a client uploads (`POST /v1/files`, or an upload completed: services/uploads.py)
and what the server writes (a batch's output), per account, their bytes in the database
(storage/files.py) so every replica reads every file.

A file is received as it arrives, chunk by chunk, never whole in memory (`receive`): past
`file_max_bytes` it stops with a 413 `file_too_large`, past the account's storage quota with a
400 `storage_quota_exceeded` — and either way, or when the client leaves mid-body, nothing is
left: no row, no chunk, no quota used (`drop`). `keep` then makes it visible and counts it in
the quota, atomically (storage/quota.py). What the server writes (`store_output`) is counted but
never refused. A file expired (`expires_at`) or of another account is not found (404, param
`file_id`). `sweep()` deletes expired files, expired uploads and whatever a dead writer left:
the server calls it every few minutes (a writer alive is never older than STALE).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tokendock.errors import InvalidRequest, NotFound, RequestTooLarge
from tokendock.protocol.files import (
    CLIENT_PURPOSES,
    EXPIRES_MAX,
    EXPIRES_MIN,
    file_deleted,
    file_object,
    filename_problem,
)
from tokendock.protocol.stored import is_object_id, page
from tokendock.services.storage import StorageQuota, megabytes
from tokendock.storage.files import CHUNK, FileRow, FileStore, UnknownCursor
from tokendock.storage.quota import QuotaExceeded
from tokendock.storage.uploads import UploadStore

STALE = timedelta(hours=1)  # an `uploading` file or part older than this: its writer died
Clock = Callable[[], datetime]


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def quota_exceeded(used: int, limit: int, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"Storage quota exceeded: this account stores {megabytes(used)} of its "
        f"{megabytes(limit)} quota. Delete files (or stored responses or chat completions) "
        "to free space.",
        param=param,
        code="storage_quota_exceeded",
    )


def too_large(limit: int, param: str) -> RequestTooLarge:
    return RequestTooLarge(
        f"The file is larger than this server's limit of {megabytes(limit)} ({limit} bytes).",
        param=param,
        code="file_too_large",
    )


def not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id")


def check_purpose(purpose: str, param: str = "purpose") -> None:
    """A purpose a client may upload for (400 naming `param` otherwise)."""
    if purpose not in CLIENT_PURPOSES:
        raise InvalidRequest(
            f"Invalid purpose '{purpose[:64]}': expected one of {', '.join(CLIENT_PURPOSES)}.",
            param=param,
        )


def check_filename(filename: str, purpose: str | None, param: str) -> None:
    """A file name the database can keep; a batch input must be a .jsonl file (OpenAI's rule)."""
    problem = filename_problem(filename)
    if problem is not None:
        raise InvalidRequest(f"Invalid file name: {problem}.", param=param)
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest(
            "A file for purpose 'batch' must be a JSON Lines file named *.jsonl.", param=param
        )


def expiry(anchor: str | None, seconds: str | None) -> int | None:
    """`expires_after[anchor]` / `expires_after[seconds]` of a form → seconds (or None)."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest(
            "Invalid 'expires_after.anchor': expected 'created_at'.", param="expires_after"
        )
    text = seconds or ""
    if not (text.isascii() and text.isdigit()) or not EXPIRES_MIN <= int(text) <= EXPIRES_MAX:
        raise InvalidRequest(
            f"Invalid 'expires_after.seconds': expected an integer from {EXPIRES_MIN} to "
            f"{EXPIRES_MAX}.",
            param="expires_after",
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class Incoming:
    """A file received but not yet kept (an `uploading` row, seen by nobody)."""

    row: FileRow


class Files:
    def __init__(
        self,
        store: FileStore,
        uploads: UploadStore,
        quota: StorageQuota,
        *,
        max_bytes: int,
        clock: Clock = now_utc,
    ):
        self.store = store
        self.uploads_store = uploads
        self.quota = quota
        self.max_bytes = max_bytes
        self.clock = clock

    async def receive(
        self, account_id: int, filename: str, chunks: AsyncIterator[bytes], *, refuse: bool = True
    ) -> Incoming:
        """Write the file's bytes as they come; `refuse`: bounded by `file_max_bytes` (413)
        and the account's quota (400). On any failure nothing is left."""
        row = FileRow(new_file_id(), account_id, "", filename, 0, self.clock(), None, "uploading")
        writer = await self.store.begin(row)
        try:
            check_at = 0
            async for piece in chunks:
                await writer.write(piece)
                if not refuse:
                    continue
                if writer.total > self.max_bytes:
                    raise too_large(self.max_bytes, "file")
                if writer.total >= check_at:
                    await self._check_quota(account_id, writer.total, "file")
                    check_at = writer.total + 8 * CHUNK
            await writer.close()
        except BaseException:
            await self.drop(Incoming(row))
            raise
        return Incoming(replace(row, bytes=writer.total))

    async def _check_quota(self, account_id: int, incoming: int, param: str) -> None:
        limit = self.quota.limit
        if limit is not None:
            used = await self.quota.used(account_id)
            if used + incoming > limit:
                raise quota_exceeded(used, limit, param)

    async def keep(
        self,
        incoming: Incoming,
        purpose: str,
        expires_seconds: int | None,
        *,
        refuse: bool = True,
    ) -> FileRow:
        """Make the received file visible, counted in the quota (refused atomically past it
        when `refuse`); on a refusal the file is dropped."""
        row = incoming.row
        expires = None
        if expires_seconds is not None:
            expires = row.created_at + timedelta(seconds=expires_seconds)
        kept = replace(row, purpose=purpose, expires_at=expires, status="processed")
        try:
            limit = self.quota.limit if refuse else None
            await self.store.finish(kept, limit)
        except QuotaExceeded as exc:
            await self.drop(incoming)
            raise quota_exceeded(exc.used, exc.limit, "file") from None
        except BaseException:
            await self.drop(incoming)
            raise
        return kept

    async def drop(self, incoming: Incoming) -> None:
        """Delete a received file not kept; done even when the caller is being cancelled."""
        await asyncio.shield(self.store.discard(incoming.row.id))

    async def get(self, account_id: int, file_id: str) -> FileRow:
        row = None
        if is_object_id(file_id):
            row = await self.store.get(account_id, file_id, self.clock())
        if row is None:
            raise not_found(file_id)
        return row

    async def content(self, row: FileRow) -> AsyncIterator[bytes]:
        """The file's bytes, chunk by chunk, in order (one short read each)."""
        async for chunk in self.store.chunks(await self.store.blobs(row.id)):
            yield chunk

    async def store_output(
        self, account_id: int, purpose: str, filename: str, chunks: AsyncIterator[bytes]
    ) -> FileRow:
        """A file the server writes (a batch's output): counted in the quota, never refused."""
        incoming = await self.receive(account_id, filename, chunks, refuse=False)
        return await self.keep(incoming, purpose, None, refuse=False)

    async def list(
        self,
        account_id: int,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        order: str = "desc",
    ) -> dict[str, Any]:
        try:
            rows, more = await self.store.page(
                account_id,
                self.clock(),
                purpose=purpose,
                after=after if after is None or is_object_id(after) else "",
                limit=limit,
                descending=order == "desc",
            )
        except UnknownCursor:
            raise InvalidRequest(
                f"Invalid 'after': no file has the id '{(after or '')[:64]}'.", param="after"
            ) from None
        return page([file_object(r) for r in rows], more)

    async def delete(self, account_id: int, file_id: str) -> dict[str, Any]:
        await self.get(account_id, file_id)  # expired or unknown: 404
        if not await self.store.delete(account_id, file_id):
            raise not_found(file_id)
        return file_deleted(file_id)

    async def sweep(self) -> int:
        """Delete expired files, expire uploads past their hour, and delete what writers that
        died left `uploading`; the number of objects removed. Safe on every replica at once."""
        now = self.clock()
        removed = await self.store.sweep(now, now - STALE)
        return removed + await self.uploads_store.sweep(now, now - STALE)

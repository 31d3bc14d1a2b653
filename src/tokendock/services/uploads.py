"""Uploads (OpenAI's Uploads API): a file of up to `file_max_bytes` sent in parts of up to
`upload_part_max_bytes` each, then completed — the parts in the order the client names, checked
against the declared size and, when given, an MD5 (computed streaming over the assembled bytes)
— into a file (services/files.py) without copying a byte.

An upload is pending for an hour after its creation, then expired (its parts freed). A part
counts against the account's storage quota once added; a part interrupted mid-body leaves
nothing. Another account's upload is not found (404, param `upload_id`).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from tokendock.errors import InvalidRequest, NotFound, RequestTooLarge
from tokendock.protocol.files import UploadView, part_object, upload_object
from tokendock.protocol.stored import is_object_id
from tokendock.services.files import (
    Files,
    check_filename,
    check_purpose,
    new_file_id,
    quota_exceeded,
)
from tokendock.services.storage import megabytes
from tokendock.storage.files import FileRow
from tokendock.storage.quota import QuotaExceeded
from tokendock.storage.uploads import (
    CANCELLED,
    EXPIRED,
    PENDING,
    NotPending,
    OverDeclared,
    UploadRow,
    UploadStore,
)

LIFETIME = timedelta(hours=1)
JSON = dict[str, Any]


def _view(row: UploadRow, status: str | None = None) -> UploadView:
    return UploadView(
        row.id,
        row.purpose,
        row.filename,
        row.bytes,
        status or row.status,
        row.created_at,
        row.expires_at,
    )


def _not_found(upload_id: str) -> NotFound:
    return NotFound(f"No such Upload object: {upload_id}", param="upload_id")


def _not_pending(row: UploadRow, status: str) -> InvalidRequest:
    return InvalidRequest(
        f"Upload {row.id} is {status}; only a pending upload can be changed.",
        param="upload_id",
    )


class Uploads:
    def __init__(self, files: Files, store: UploadStore, *, part_max_bytes: int):
        self.files = files
        self.store = store
        self.part_max_bytes = part_max_bytes

    async def create(
        self, account_id: int, filename: str, purpose: str, size: int, mime_type: str
    ) -> JSON:
        check_purpose(purpose)
        check_filename(filename, purpose, "filename")
        limit = self.files.max_bytes
        if not 0 < size <= limit:
            raise InvalidRequest(
                f"Invalid 'bytes': an upload holds from 1 byte to {megabytes(limit)} "
                f"({limit} bytes) on this server.",
                param="bytes",
            )
        quota = self.files.quota.limit
        if quota is not None:
            used = await self.files.quota.used(account_id)
            if used + size > quota:
                raise quota_exceeded(used, quota, "bytes")
        now = self.files.clock()
        row = UploadRow(
            id="upload_" + secrets.token_hex(12),
            account_id=account_id,
            purpose=purpose,
            filename=filename,
            bytes=size,
            mime_type=mime_type,
            status=PENDING,
            file_id=None,
            created_at=now,
            expires_at=now + LIFETIME,
        )
        await self.store.create(row)
        return upload_object(_view(row))

    async def _pending(self, account_id: int, upload_id: str) -> UploadRow:
        """The account's upload, pending (404 if none; 400 once it has ended or expired)."""
        row = await self.store.get(account_id, upload_id) if is_object_id(upload_id) else None
        if row is None:
            raise _not_found(upload_id)
        if row.status != PENDING:
            raise _not_pending(row, row.status)
        if row.expires_at <= self.files.clock():
            raise _not_pending(row, EXPIRED)
        return row

    async def add_part(self, account_id: int, upload_id: str, data: AsyncIterator[bytes]) -> JSON:
        """Receive one part, streamed; 413 `file_too_large` naming `data` past the part
        bound, 400 past the upload's declared bytes or the storage quota."""
        row = await self._pending(account_id, upload_id)
        part_id = "part_" + secrets.token_hex(12)
        created = self.files.clock()
        writer = await self.store.begin_part(part_id, upload_id, created)
        try:
            async for piece in data:
                await writer.write(piece)
                if writer.total > self.part_max_bytes:
                    raise RequestTooLarge(
                        f"An upload part holds at most {megabytes(self.part_max_bytes)} "
                        f"({self.part_max_bytes} bytes).",
                        param="data",
                        code="file_too_large",
                    )
                if writer.total > row.bytes:
                    raise OverDeclared(row.id)
            await writer.close()
            await self.store.finish_part(row, part_id, writer.total, self.files.quota.limit)
        except OverDeclared:
            await self._drop_part(part_id)
            raise InvalidRequest(
                f"The parts add up to more than the upload's declared {row.bytes} bytes.",
                param="data",
            ) from None
        except QuotaExceeded as exc:
            await self._drop_part(part_id)
            raise quota_exceeded(exc.used, exc.limit, "data") from None
        except NotPending:
            await self._drop_part(part_id)
            raise _not_pending(row, "no longer pending") from None
        except BaseException:
            await self._drop_part(part_id)
            raise
        return part_object(part_id, upload_id, created)

    async def _drop_part(self, part_id: str) -> None:
        await asyncio.shield(self.store.discard_part(part_id))

    async def complete(
        self, account_id: int, upload_id: str, part_ids: list[str], md5: str | None
    ) -> JSON:
        row = await self._pending(account_id, upload_id)
        added = await self.store.added(upload_id)
        if not part_ids or len(set(part_ids)) != len(part_ids):
            raise InvalidRequest(
                "Invalid 'part_ids': name each part of the upload once, in order.",
                param="part_ids",
            )
        unknown = [p for p in part_ids if p not in added]
        if unknown:
            raise InvalidRequest(
                f"Invalid 'part_ids': '{unknown[0][:64]}' is not a part of this upload.",
                param="part_ids",
            )
        total = sum(added[p] for p in part_ids)
        if total != row.bytes:
            raise InvalidRequest(
                f"The parts hold {total} bytes, but the upload was created with 'bytes' "
                f"{row.bytes}.",
                param="bytes",
            )
        if md5 is not None and md5.lower() != await self._md5(part_ids):
            raise InvalidRequest(
                "The MD5 checksum of the assembled parts does not match 'md5'.", param="md5"
            )
        now = self.files.clock()
        file = FileRow(
            new_file_id(), account_id, row.purpose, row.filename, total, now, None, "processed"
        )
        try:
            await self.store.complete(row, part_ids, file)
        except NotPending:
            raise _not_pending(row, "no longer pending") from None
        return upload_object(_view(row, "completed"), file)

    async def _md5(self, part_ids: list[str]) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        async for chunk in self.files.store.chunks(part_ids):
            digest.update(chunk)
        return digest.hexdigest()

    async def cancel(self, account_id: int, upload_id: str) -> JSON:
        row = await self._pending(account_id, upload_id)
        try:
            await self.store.end(row, CANCELLED)
        except NotPending:
            raise _not_pending(row, "no longer pending") from None
        return upload_object(_view(row, CANCELLED))

"""Uploads (OpenAI's Uploads API): a file sent in parts, each part's bytes a blob of its own
(storage/files.py), completed into a file that names the parts' blobs in order — no copy.

Quota: a part counts its bytes in `account_storage` once added (`finish_part`, in the same
transaction); completing moves them to the file (its `size`; unlisted parts are dropped and
freed), cancelling or expiring frees them all. Every state change of an upload locks its row and
changes it only while `pending`, so a completion and a cancellation racing on two replicas
end in exactly one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tokendock.storage import quota
from tokendock.storage.db import reader
from tokendock.storage.files import BlobWriter, FileRow, FileStore, drop_blobs, utc
from tokendock.storage.ids import plain
from tokendock.storage.tables import upload_parts as parts_t
from tokendock.storage.tables import uploads as t

PENDING, COMPLETED, CANCELLED, EXPIRED = "pending", "completed", "cancelled", "expired"
UPLOADING, ADDED = "uploading", "added"


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: str
    account_id: int
    purpose: str
    filename: str
    bytes: int
    mime_type: str
    status: str
    file_id: str | None
    created_at: datetime
    expires_at: datetime


class NotPending(Exception):
    """The upload is no longer pending (completed, cancelled or expired meanwhile)."""


class OverDeclared(Exception):
    """The parts would add up to more than the upload's declared `bytes`."""


def _upload(found: object) -> UploadRow:
    m = found._mapping  # type: ignore[attr-defined]
    created, expires = utc(m["created_at"]), utc(m["expires_at"])
    assert created is not None and expires is not None
    return UploadRow(
        id=m["id"],
        account_id=m["account_id"],
        purpose=m["purpose"],
        filename=m["filename"],
        bytes=int(m["bytes"]),
        mime_type=m["mime_type"],
        status=m["status"],
        file_id=m["file_id"],
        created_at=created,
        expires_at=expires,
    )


class UploadStore:
    def __init__(self, engine: AsyncEngine, files: FileStore):
        self._engine = engine
        self._reader = reader(engine)
        self._files = files

    async def create(self, row: UploadRow) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(t).values(
                    id=row.id,
                    account_id=row.account_id,
                    purpose=row.purpose,
                    filename=row.filename,
                    bytes=row.bytes,
                    mime_type=row.mime_type,
                    status=row.status,
                    file_id=None,
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                )
            )

    async def get(self, account_id: int, upload_id: str) -> UploadRow | None:
        if not plain(upload_id):
            return None
        query = select(t).where(t.c.id == upload_id, t.c.account_id == account_id)
        async with self._reader.connect() as conn:
            found = (await conn.execute(query)).first()
        return None if found is None else _upload(found)

    async def begin_part(self, part_id: str, upload_id: str, now: datetime) -> BlobWriter:
        """An `uploading` part (in no quota) and the writer of its bytes."""
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(parts_t).values(
                    id=part_id, upload_id=upload_id, bytes=0, status=UPLOADING, created_at=now
                )
            )
        return BlobWriter(self._engine, part_id)

    async def _lock_pending(self, conn: AsyncConnection, upload: UploadRow) -> None:
        query = (
            select(t.c.status)
            .where(t.c.id == upload.id, t.c.account_id == upload.account_id)
            .with_for_update()
        )
        if (await conn.execute(query)).scalar() != PENDING:
            raise NotPending(upload.id)

    async def _added(self, conn: AsyncConnection, upload_id: str) -> dict[str, int]:
        query = select(parts_t.c.id, parts_t.c.bytes).where(
            parts_t.c.upload_id == upload_id, parts_t.c.status == ADDED
        )
        return {r.id: int(r.bytes) for r in (await conn.execute(query)).all()}

    async def finish_part(
        self, upload: UploadRow, part_id: str, size: int, limit: int | None
    ) -> None:
        """The part is added and counts its bytes; NotPending, OverDeclared or QuotaExceeded
        (nothing changed) otherwise."""
        async with self._engine.begin() as conn:
            await self._lock_pending(conn, upload)
            total = select(func.coalesce(func.sum(parts_t.c.bytes), 0)).where(
                parts_t.c.upload_id == upload.id, parts_t.c.status == ADDED
            )
            if int((await conn.execute(total)).scalar_one()) + size > upload.bytes:
                raise OverDeclared(upload.id)
            await conn.execute(
                update(parts_t).where(parts_t.c.id == part_id).values(status=ADDED, bytes=size)
            )
            await quota.add(conn, upload.account_id, size, limit=limit)

    async def discard_part(self, part_id: str) -> bool:
        """Delete a part still `uploading`, chunks and all."""
        async with self._engine.begin() as conn:
            gone = await conn.execute(
                delete(parts_t).where(parts_t.c.id == part_id, parts_t.c.status == UPLOADING)
            )
            if gone.rowcount:
                await drop_blobs(conn, [part_id])
        return bool(gone.rowcount)

    async def added(self, upload_id: str) -> dict[str, int]:
        """The upload's added parts: id → bytes."""
        async with self._reader.connect() as conn:
            return await self._added(conn, upload_id)

    async def complete(self, upload: UploadRow, part_ids: Sequence[str], file: FileRow) -> None:
        """The file made of `part_ids` (the upload's added parts, in order, checked by the
        caller), the upload `completed`; the parts not named are dropped and freed. NotPending
        when the upload ended meanwhile (nothing changed)."""
        async with self._engine.begin() as conn:
            await self._lock_pending(conn, upload)
            added = await self._added(conn, upload.id)
            if any(p not in added for p in part_ids):
                raise NotPending(upload.id)
            unused = [p for p in added if p not in set(part_ids)]
            await self._files.insert_parts(conn, file, part_ids)
            await conn.execute(
                update(t).where(t.c.id == upload.id).values(status=COMPLETED, file_id=file.id)
            )
            await self._drop_parts(conn, unused)
            await quota.add(conn, upload.account_id, -sum(added[p] for p in unused))

    async def end(self, upload: UploadRow, status: str) -> None:
        """Cancel or expire a pending upload: its parts dropped, their bytes freed."""
        async with self._engine.begin() as conn:
            await self._lock_pending(conn, upload)
            added = await self._added(conn, upload.id)
            await conn.execute(update(t).where(t.c.id == upload.id).values(status=status))
            await self._drop_parts(conn, list(added))
            await quota.add(conn, upload.account_id, -sum(added.values()))

    async def _drop_parts(self, conn: AsyncConnection, ids: Sequence[str]) -> None:
        if ids:
            await drop_blobs(conn, ids)
            await conn.execute(delete(parts_t).where(parts_t.c.id.in_(list(ids))))

    async def sweep(self, now: datetime, stale_before: datetime) -> int:
        """Expire pending uploads past their `expires_at`, and delete parts left `uploading`
        since before `stale_before` (their writer died); the number of either."""
        async with self._reader.connect() as conn:
            query = select(t).where(t.c.status == PENDING, t.c.expires_at <= now).limit(1000)
            late = [_upload(r) for r in (await conn.execute(query)).all()]
            query = (
                select(parts_t.c.id)
                .where(parts_t.c.status == UPLOADING, parts_t.c.created_at < stale_before)
                .limit(1000)
            )
            stale = list((await conn.execute(query)).scalars())
        done = 0
        for upload in late:
            try:
                await self.end(upload, EXPIRED)
                done += 1
            except NotPending:
                pass
        for part_id in stale:
            done += await self.discard_part(part_id)
        return done

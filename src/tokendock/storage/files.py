"""Files (the Files API, batch input and output) and their bytes, always read and written for
one account: another account's file is never found (the caller answers 404, never 403).

A file's bytes are `blob_chunks` rows of at most CHUNK bytes, keyed by a blob id and numbered
from 0: the file's own id, or — a completed upload — its parts' ids, in order (`parts`, JSON),
so completing an upload copies nothing. Writing a file is three steps: `begin` (an `uploading`
row, nobody's to see, in no quota), `write` each chunk as it arrives (its own short
transaction), then `finish` (status `processed`, counted in `account_storage` in the same
transaction; QuotaExceeded rolls that back). A writer that fails calls `discard`; one that died
leaves an `uploading` row that `sweep_stale` deletes, chunks and all. `delete` frees the file's
bytes in the transaction that deletes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from tokendock.storage import quota
from tokendock.storage.db import reader
from tokendock.storage.ids import plain
from tokendock.storage.tables import blob_chunks as chunks_t
from tokendock.storage.tables import files as t

CHUNK = 1024 * 1024  # the most one blob_chunks row holds
UPLOADING, PROCESSED = "uploading", "processed"


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    account_id: int
    purpose: str
    filename: str
    bytes: int
    created_at: datetime
    expires_at: datetime | None
    status: str


class UnknownCursor(Exception):
    """`after` names no file of the account."""


def utc(when: datetime | None) -> datetime | None:
    """SQLite gives back the fields as stored (UTC, no zone)."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def _row(found: object) -> FileRow:
    m = found._mapping  # type: ignore[attr-defined]
    created = utc(m["created_at"])
    assert created is not None
    return FileRow(
        id=m["id"],
        account_id=m["account_id"],
        purpose=m["purpose"],
        filename=m["filename"],
        bytes=int(m["bytes"]),
        created_at=created,
        expires_at=utc(m["expires_at"]),
        status=m["status"],
    )


def blob_ids(file_id: str, parts: str | None) -> list[str]:
    """The blobs whose chunks, in order, are the file's content."""
    if parts is None:
        return [file_id]
    ids: list[str] = orjson.loads(parts)
    return ids


async def drop_blobs(conn: AsyncConnection, ids: Sequence[str]) -> None:
    """Delete these blobs' chunks, in the caller's transaction."""
    if ids:
        await conn.execute(delete(chunks_t).where(chunks_t.c.blob_id.in_(list(ids))))


class BlobWriter:
    """Writes one blob's chunks, each a short transaction of its own, never holding more than
    one CHUNK in memory; `total` counts what was given."""

    def __init__(self, engine: AsyncEngine, blob_id: str):
        self._engine = engine
        self.blob_id = blob_id
        self._pending = bytearray()
        self._seq = 0
        self.total = 0

    async def write(self, data: bytes) -> None:
        self._pending += data
        self.total += len(data)
        while len(self._pending) >= CHUNK:
            await self._flush(bytes(self._pending[:CHUNK]))
            del self._pending[:CHUNK]

    async def close(self) -> None:
        """Write what is left (a last, shorter chunk)."""
        if self._pending:
            await self._flush(bytes(self._pending))
            self._pending.clear()

    async def _flush(self, data: bytes) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(chunks_t).values(blob_id=self.blob_id, seq=self._seq, data=data)
            )
        self._seq += 1


class FileStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self._reader = reader(engine)

    async def begin(self, row: FileRow) -> BlobWriter:
        """An `uploading` row for the file (in no quota, seen by nobody) and its writer."""
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t).values(
                    id=row.id,
                    account_id=row.account_id,
                    purpose=row.purpose,
                    filename=row.filename,
                    bytes=0,
                    status=UPLOADING,
                    created_at=row.created_at,
                    expires_at=row.expires_at,
                    size=0,
                )
            )
        return BlobWriter(self.engine, row.id)

    async def finish(self, row: FileRow, limit: int | None) -> None:
        """The file becomes `processed` with `row`'s purpose, expiry and size, counted in the
        account's storage; `limit`: QuotaExceeded (the file stays `uploading`) rather than
        pass it."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.id == row.id, t.c.status == UPLOADING)
                .values(
                    status=PROCESSED,
                    purpose=row.purpose,
                    expires_at=row.expires_at,
                    bytes=row.bytes,
                    size=row.bytes,
                )
            )
            await quota.add(conn, row.account_id, row.bytes, limit=limit)

    async def discard(self, file_id: str) -> bool:
        """Delete a file still `uploading`, chunks and all (its writer failed or left)."""
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(t).where(t.c.id == file_id, t.c.status == UPLOADING))
            if gone.rowcount:
                await drop_blobs(conn, [file_id])
        return bool(gone.rowcount)

    async def insert_parts(self, conn: AsyncConnection, row: FileRow, parts: Sequence[str]) -> None:
        """A processed file made of upload parts' blobs, in the caller's transaction (which
        counts its bytes: they were counted as the parts')."""
        await conn.execute(
            insert(t).values(
                id=row.id,
                account_id=row.account_id,
                purpose=row.purpose,
                filename=row.filename,
                bytes=row.bytes,
                status=PROCESSED,
                parts=orjson.dumps(list(parts)).decode(),
                created_at=row.created_at,
                expires_at=row.expires_at,
                size=row.bytes,
            )
        )

    def _visible(self, account_id: int, now: datetime) -> list[ColumnElement[bool]]:
        return [
            t.c.account_id == account_id,
            t.c.status == PROCESSED,
            or_(t.c.expires_at.is_(None), t.c.expires_at > now),
        ]

    async def get(self, account_id: int, file_id: str, now: datetime) -> FileRow | None:
        if not plain(file_id):
            return None
        query = select(t).where(t.c.id == file_id, *self._visible(account_id, now))
        async with self._reader.connect() as conn:
            found = (await conn.execute(query)).first()
        return None if found is None else _row(found)

    async def page(
        self,
        account_id: int,
        now: datetime,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        descending: bool,
    ) -> tuple[list[FileRow], bool]:
        """A page of the account's files by (created_at, id); `after`: the last id of the
        previous page (UnknownCursor when the account has no such file). Also: has_more."""
        where = self._visible(account_id, now)
        if purpose is not None:
            where.append(t.c.purpose == purpose)
        if after is not None and not plain(after):
            raise UnknownCursor(after)
        async with self._reader.connect() as conn:
            if after is not None:
                cursor = select(t.c.created_at).where(
                    t.c.id == after, *self._visible(account_id, now)
                )
                at = (await conn.execute(cursor)).scalar()
                if at is None:
                    raise UnknownCursor(after)
                if descending:
                    where.append(
                        or_(t.c.created_at < at, and_(t.c.created_at == at, t.c.id < after))
                    )
                else:
                    where.append(
                        or_(t.c.created_at > at, and_(t.c.created_at == at, t.c.id > after))
                    )
            order = (
                (t.c.created_at.desc(), t.c.id.desc()) if descending else (t.c.created_at, t.c.id)
            )
            query = select(t).where(*where).order_by(*order).limit(limit + 1)
            found = (await conn.execute(query)).all()
        rows = [_row(r) for r in found[:limit]]
        return rows, len(found) > limit

    async def blobs(self, file_id: str) -> list[str]:
        query = select(t.c.parts).where(t.c.id == file_id)
        async with self._reader.connect() as conn:
            parts = (await conn.execute(query)).scalar()
        return blob_ids(file_id, parts)

    async def chunks(self, ids: Sequence[str]) -> AsyncIterator[bytes]:
        """The blobs' bytes in order, one chunk (one short read) at a time."""
        for blob_id in ids:
            seq = 0
            while True:
                query = select(chunks_t.c.data).where(
                    chunks_t.c.blob_id == blob_id, chunks_t.c.seq == seq
                )
                async with self._reader.connect() as conn:
                    data = (await conn.execute(query)).scalar()
                if data is None:
                    break
                yield bytes(data)
                seq += 1

    async def delete(self, account_id: int, file_id: str) -> bool:
        """Delete the processed file, its chunks, and free its bytes; False when the account
        has no such file."""
        if not plain(file_id):
            return False
        where = (t.c.id == file_id, t.c.account_id == account_id, t.c.status == PROCESSED)
        async with self.engine.begin() as conn:
            query = select(t.c.size, t.c.parts).where(*where).with_for_update()
            found = (await conn.execute(query)).first()
            if found is None:
                return False
            await conn.execute(delete(t).where(*where))
            await drop_blobs(conn, blob_ids(file_id, found.parts))
            await quota.add(conn, account_id, -int(found.size))
        return True

    async def sweep(self, now: datetime, stale_before: datetime) -> int:
        """Delete files expired by `now`, and `uploading` ones begun before `stale_before`
        (their writer died); the number deleted."""
        expired = and_(t.c.status == PROCESSED, t.c.expires_at <= now)
        stale = and_(t.c.status == UPLOADING, t.c.created_at < stale_before)
        query = select(t.c.id, t.c.account_id).where(or_(expired, stale)).limit(1000)
        async with self._reader.connect() as conn:
            found = (await conn.execute(query)).all()
        done = 0
        for file_id, account_id in found:
            if await self.delete(account_id, file_id) or await self.discard(file_id):
                done += 1
        return done

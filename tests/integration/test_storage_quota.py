"""The per-account storage counter (storage/quota.py) on SQLite and PostgreSQL: every stored
response and chat completion adds its bytes in the same transaction, an update adds the
difference, a delete frees exactly its size; racing inserts under a limit never pass it and
never lose a byte; migration 0012 backfills the sizes of rows stored before it."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import func, select, text

from tests.e2e.server import new_database
from tests.integration.conftest import BACKENDS, Db, _drop_postgres
from tokendock.protocol.response_shapes import ResponseRecord, new_id
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import alembic_config
from tokendock.storage.quota import QuotaExceeded, StorageUsage
from tokendock.storage.responses import ResponseStore, stored_size
from tokendock.storage.stored_chat import StoredChat, StoredChatStore
from tokendock.storage.tables import account_storage, responses, stored_chat_completions


async def account(db: Db) -> int:
    return await db.svc.create_account(f"q-{secrets.token_hex(4)}@example.com", "pw-long-enough")


def record(account_id: int, text: str = "hello") -> ResponseRecord:
    return ResponseRecord(
        id=new_id("resp"),
        account_id=account_id,
        model="m",
        created_at=int(time.time()),
        input_items=[{"type": "message", "role": "user", "content": [{"text": text}]}],
        metadata={"k": "v"},
    )


def chat(account_id: int, messages: str = '[{"role":"user","content":"hi"}]') -> StoredChat:
    return StoredChat(
        id=f"chatcmpl-{secrets.token_hex(12)}",
        account_id=account_id,
        key_id=None,
        model="m",
        meta='{"a":"b"}',
        messages=messages,
        completion='{"id":"x","choices":[]}',
        created_at=datetime.now(UTC),
    )


async def sizes(db: Db, account_id: int) -> int:
    """Σ size of the account's rows, straight from the tables."""
    async with db.engine.connect() as conn:
        total = 0
        for table in (responses, stored_chat_completions):
            query = select(func.coalesce(func.sum(table.c.size), 0)).where(
                table.c.account_id == account_id
            )
            total += int((await conn.execute(query)).scalar_one())
    return total


async def test_insert_update_delete_keep_the_counter_exact(db: Db) -> None:
    a, b = await account(db), await account(db)
    store, chats, usage = (
        ResponseStore(db.engine),
        StoredChatStore(db.engine),
        StorageUsage(db.engine),
    )
    rec = record(a)
    await store.insert(rec)
    assert await usage.used(a) == stored_size(rec) > 0
    rec.output = [{"type": "message", "content": [{"text": "x" * 1000}]}]
    rec.status = "completed"
    assert await store.update(rec)
    assert await usage.used(a) == stored_size(rec) == await sizes(db, a)

    row = chat(a)
    await chats.insert(row, {"a": "b"})
    assert await usage.used(a) == await sizes(db, a)
    assert await chats.set_metadata(a, row.id, '{"a":"' + "y" * 400 + '"}', {"a": "y" * 400})
    assert await usage.used(a) == await sizes(db, a)
    assert await usage.used(b) == 0  # another account's bytes are its own

    assert not await store.delete(b, rec.id)  # not b's to delete: nothing freed
    assert await store.delete(a, rec.id)
    assert not await store.delete(a, rec.id)  # freed once
    assert await chats.delete(a, row.id)
    assert await usage.used(a) == 0 == await sizes(db, a)


async def test_racing_inserts_never_pass_the_limit(db: Db) -> None:
    a = await account(db)
    store, usage = ResponseStore(db.engine), StorageUsage(db.engine)
    each = stored_size(record(a))
    limit = each * 5 + each // 2  # room for 5 of them

    async def one() -> bool:
        try:
            await store.insert(record(a), limit=limit)
        except QuotaExceeded:
            return False
        return True

    stored = await asyncio.gather(*(one() for _ in range(12)))
    assert sum(stored) == 5
    assert await usage.used(a) == 5 * each == await sizes(db, a)

    chats = StoredChatStore(db.engine)
    await asyncio.gather(*(chats.insert(chat(a), {}) for _ in range(8)))  # paid: never refused
    assert await usage.used(a) == await sizes(db, a) > limit


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migration_backfills_what_was_stored_before(backend: str, tmp_path: Path) -> None:
    url = await asyncio.to_thread(new_database, backend, tmp_path)
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        await asyncio.to_thread(command.upgrade, config, "0011")
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, email, password_hash, is_admin, disabled, balance,"
                    " created_at, tier) VALUES (7, 'x@example.com', 'h', false, false, 0, :now,"
                    " 'default')"
                ),
                {"now": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO responses (id, account_id, model, status, background, created_at,"
                    " request, input_items, context, output) VALUES ('resp_1', 7, 'm',"
                    " 'completed', false, :now, '{}', '[\"h\u00e9\"]', '[]', '[]')"
                ),
                {"now": now},
            )
            await conn.execute(
                text(
                    "INSERT INTO stored_chat_completions (id, account_id, model, messages,"
                    " completion, created_at) VALUES ('chatcmpl-1', 7, 'm', '[1]', '{}', :now)"
                ),
                {"now": now},
            )
        await asyncio.to_thread(command.upgrade, config, "head")
        # 2 + 7 (é is two bytes) + 2 + 2 = 13 for the response, 3 + 2 for the completion
        async with engine.connect() as conn:
            used = (
                await conn.execute(
                    select(account_storage.c.used).where(account_storage.c.account_id == 7)
                )
            ).scalar_one()
        assert used == 13 + 5
        await asyncio.to_thread(command.downgrade, config, "0011")  # and back
    finally:
        await engine.dispose()
        if backend == "postgres":
            await _drop_postgres(url)

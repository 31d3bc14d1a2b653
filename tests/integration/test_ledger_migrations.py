"""On PostgreSQL each migration installs exactly the frozen function text of its version
(storage/ledger_plpgsql.py), up and down: an old migration still creates what it created."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command

from tests.e2e.server import POSTGRES_URL, new_database
from tests.integration.conftest import _drop_postgres
from tokendock.storage import ledger_plpgsql as v
from tokendock.storage.migrate import alembic_config

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="TOKENDOCK_TEST_POSTGRES_URL is not set")


def body(text: str) -> str:
    return text.split("$$")[1]


async def installed(url: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        (source,) = await conn.fetch("SELECT prosrc FROM pg_proc WHERE proname = $1", name)
        return str(source[0])
    finally:
        await conn.close()


async def test_each_revision_installs_its_frozen_text(tmp_path: Path) -> None:
    url = await asyncio.to_thread(new_database, "postgres", tmp_path)
    config = alembic_config(url)
    try:
        for revision, settle in [
            ("0003", v.TD_SETTLE_V3),
            ("0004", v.TD_SETTLE_V4),
            ("0007", v.TD_SETTLE_V7),
            ("0008", v.TD_SETTLE_V8),
            ("0010", v.TD_SETTLE_V10),
            ("0011", v.TD_SETTLE_V11),
        ]:
            await asyncio.to_thread(command.upgrade, config, revision)
            assert await installed(url, "td_settle") == body(settle), revision
            assert await installed(url, "td_hold") == body(v.TD_HOLD), revision
        downs = [
            ("0010", v.TD_SETTLE_V10),
            ("0008", v.TD_SETTLE_V8),
            ("0007", v.TD_SETTLE_V7),
            ("0004", v.TD_SETTLE_V4),
        ]
        for revision, settle in downs:
            await asyncio.to_thread(command.downgrade, config, revision)
            assert await installed(url, "td_settle") == body(settle), revision
    finally:
        await _drop_postgres(url)

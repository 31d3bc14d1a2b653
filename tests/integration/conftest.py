"""A fresh, migrated database per test, on SQLite and (when TOKENDOCK_TEST_POSTGRES_URL is set)
PostgreSQL, with the ledger and the account service wired the way `create_app` wires them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.e2e.server import POSTGRES_URL, new_database
from tokendock.billing.ledger import Ledger
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade_async

OWNER = "test"


@dataclass
class Db:
    backend: str
    url: str
    engine: AsyncEngine
    ledger: Ledger
    store: AccountStore
    svc: AccountService
    others: list[Ledger] = field(default_factory=list)

    def other_ledger(self, owner: str, hold_ttl: timedelta) -> Ledger:
        """Another process's ledger on the same database."""
        ledger = Ledger(self.engine, owner=owner, hold_ttl=hold_ttl)
        self.others.append(ledger)
        return ledger


async def _drop_postgres(url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    assert POSTGRES_URL
    name = url.rpartition("/")[2]
    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
    try:
        # An autovacuum worker that just connected to the new database cannot be terminated by
        # a non-superuser (InsufficientPrivilegeError); it leaves within moments: try again.
        for attempt in range(20):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.25)
    finally:
        await conn.close()


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(not POSTGRES_URL, reason="TOKENDOCK_TEST_POSTGRES_URL is not set"),
    ),
]


@pytest.fixture(params=BACKENDS)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    backend: str = request.param
    # new_database() runs its own event loop (asyncio.run), so it gets a thread of its own.
    url = await asyncio.to_thread(new_database, backend, tmp_path)
    await upgrade_async(url)
    engine = create_engine(url)
    ledger = Ledger(engine, owner=OWNER, hold_ttl=timedelta(hours=1))
    store = AccountStore(engine)
    db = Db(backend, url, engine, ledger, store, AccountService(store, ledger))
    try:
        yield db
    finally:
        for each in [ledger, *db.others]:
            await each.close()
        await engine.dispose()
        if backend == "postgres":
            await _drop_postgres(url)

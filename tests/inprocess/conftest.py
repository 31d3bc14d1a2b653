"""In-process fixtures: the real pipeline, gate, ledger (SQLite, migrated) and limiter around a
scripted fake backend — service level (`world`) and HTTP level (`app`: `create_app` with the
fake backend, driven by the official openai SDK through httpx's ASGI transport)."""

from __future__ import annotations

import atexit
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from fastapi import FastAPI

from tests.inprocess.fake_backend import FakeBackend
from tokendock.app import create_app
from tokendock.billing.ledger import Ledger
from tokendock.config import Settings
from tokendock.inference.backend import Backend
from tokendock.inference.registry import ModelRegistry
from tokendock.limits.memory import MemoryLimiter
from tokendock.services.accounts import AccountService
from tokendock.services.gate import Gate
from tokendock.services.idempotency import Idempotency
from tokendock.services.models import ModelDirectory
from tokendock.services.pipeline import Pipeline
from tokendock.storage.accounts import AccountStore, KeyRow
from tokendock.storage.db import create_engine
from tokendock.storage.idempotency import IdempotencyStore
from tokendock.storage.migrate import upgrade_async
from tokendock.storage.model_settings import ModelSettingsStore

if TYPE_CHECKING:
    from tests.inprocess.site import Site

GRANT = 1_000_000  # micro-credits: one credit


@dataclass
class World:
    """The pipeline as create_app wires it, on a fresh database, with one funded key."""

    pipeline: Pipeline
    gate: Gate
    ledger: Ledger
    backend: FakeBackend
    key: KeyRow
    settles: list[int]  # one entry per Ledger.settle call

    async def balance(self) -> int:
        return await self.ledger.balance(self.key.account_id)


def registry_of(*backends: Backend) -> ModelRegistry:
    return ModelRegistry({b.spec.id: b.spec for b in backends}, {b.spec.id: b for b in backends})


_TEMPLATE: list[Path] = []  # a database migrated once per test process, copied for each test


async def migrated(tmp_path: Path) -> str:
    """A fresh, fully migrated SQLite database in `tmp_path` (a copy of one migrated once)."""
    target = tmp_path / "tokendock.db"
    if not _TEMPLATE:
        folder = tempfile.mkdtemp(prefix="tokendock-template-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        template = Path(folder) / "tokendock.db"
        await upgrade_async(f"sqlite+aiosqlite:///{template}")
        _TEMPLATE.append(template)
    shutil.copyfile(_TEMPLATE[0], target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    db = create_engine(await migrated(tmp_path))
    ledger = Ledger(db, owner="inprocess", hold_ttl=timedelta(minutes=5))
    backend = FakeBackend()
    registry = registry_of(backend)
    directory = ModelDirectory(registry, ModelSettingsStore(db))
    await directory.refresh()
    gate = Gate(directory, ledger, MemoryLimiter())
    accounts = AccountService(AccountStore(db), ledger)
    account = await accounts.create_account(
        f"w-{secrets.token_hex(4)}@example.com", "pw-long-enough", grant=GRANT
    )
    new = await accounts.create_key(account, "test")
    key = await accounts.authenticate(f"Bearer {new.secret}")
    settles: list[int] = []
    real_settle = ledger.settle

    async def counted_settle(*args, **kwargs):  # type: ignore[no-untyped-def]
        settles.append(1)
        return await real_settle(*args, **kwargs)

    ledger.settle = counted_settle  # type: ignore[method-assign]
    pipeline = Pipeline(registry, gate, Idempotency(IdempotencyStore(db)))
    try:
        yield World(pipeline, gate, ledger, backend, key, settles)
    finally:
        await gate.drain()
        await ledger.close()
        await db.dispose()


@dataclass
class App:
    app: FastAPI
    backend: FakeBackend
    client: openai.AsyncOpenAI
    http: httpx.AsyncClient
    key: str
    account_id: int


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    url = await migrated(tmp_path)
    settings = Settings(data_dir=tmp_path, database_url=url, rate_tiers={})
    backend = FakeBackend()
    application = create_app(settings, registry_of(backend))
    services = application.state.services
    async with application.router.lifespan_context(application):
        account = await services.accounts.create_account(
            f"a-{secrets.token_hex(4)}@example.com", "pw-long-enough", grant=GRANT
        )
        new = await services.accounts.create_key(account, "test")
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokendock") as http:
            client = openai.AsyncOpenAI(
                api_key=new.secret, base_url="http://tokendock/v1", http_client=http, max_retries=0
            )
            yield App(application, backend, client, http, new.secret, account)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """The whole app (tests/inprocess/site.py): a fake chat and a fake embedding model, tenants
    made as the CLI makes them, the ledger read back directly."""
    from tests.inprocess.site import running_site

    async with running_site(tmp_path) as each:
        yield each

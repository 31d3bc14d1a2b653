"""A whole TokenDock in-process for tests of its HTTP behaviour: `create_app` on a fresh SQLite
database in a tmp dir, a scripted generation model (`fake-model`) and a scripted embedding
model (`fake-embed`), driven through httpx's ASGI transport by the official openai SDK and (on
httpx2, the transport it runs on) the anthropic SDK.

`Site.tenant()` makes an account and a key the way `tokendock accounts create` / `keys create`
do; `Site.limit()` sets a key's limits the way `tokendock limits set --key` does (and drops the
key cache, as the next second would). The ledger is read back directly: balances, each hold's
amount and what was captured of it, usage rows, `verify()`."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
from fastapi import FastAPI
from sqlalchemy import select

from tests.inprocess.conftest import GRANT, migrated, registry_of
from tests.inprocess.fake_backend import FakeBackend, spec
from tokendock.app import create_app
from tokendock.config import Settings
from tokendock.inference.registry import ModelRegistry
from tokendock.storage.tables import holds
from tokendock.web.deps import Services
from tokendock.web.shutdown import Shutdown

MODEL = "fake-model"  # 1 µc a prompt token, 2 µc an output token (fake_backend.spec)
EMBED = "fake-embed"
BASE = "http://tokendock"


@dataclass
class Tenant:
    """One account with one key, and the SDK clients that use it."""

    key: str
    key_id: int
    account_id: int
    oai: openai.AsyncOpenAI
    claude: anthropic.AsyncAnthropic

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class HoldRow:
    amount: int
    captured: int | None
    status: str


class Site:
    def __init__(
        self,
        app: FastAPI,
        backend: FakeBackend,
        http: httpx.AsyncClient,
        http2: httpx2.AsyncClient,
    ):
        self.app = app
        self.backend = backend
        self.http = http
        self.http2 = http2

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def clients(self, key: str) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
        oai = openai.AsyncOpenAI(
            api_key=key, base_url=f"{BASE}/v1", http_client=self.http, max_retries=0
        )
        claude = anthropic.AsyncAnthropic(
            api_key=key, base_url=BASE, http_client=self.http2, max_retries=0
        )
        return oai, claude

    async def tenant(self, grant: int = GRANT, **key_args: Any) -> Tenant:
        accounts = self.services.accounts
        email = f"t-{secrets.token_hex(4)}@example.com"
        account_id = await accounts.create_account(email, "pw-long-enough", grant=grant)
        new = await accounts.create_key(account_id, "test", **key_args)
        return Tenant(new.secret, new.id, account_id, *self.clients(new.secret))

    async def limit(self, tenant: Tenant, **limits: int) -> None:
        """`tokendock limits set --key ID --rpm … --tpm … --concurrent …`, in effect at once."""
        assert await self.services.accounts.store.set_limits(key_id=tenant.key_id, **limits)
        self.services.accounts.forget_keys()

    async def balance(self, tenant: Tenant) -> int:
        return await self.services.accounts.ledger.balance(tenant.account_id)

    async def usage(self, tenant: Tenant) -> list[dict[str, Any]]:
        """The account's usage rows, oldest first."""
        return list(reversed(await self.services.accounts.store.usage(tenant.account_id, 100)))

    async def holds(self, tenant: Tenant) -> list[HoldRow]:
        """Every credit hold the account's requests took, oldest first."""
        engine = self.services.accounts.store.engine
        query = (
            select(holds.c.amount, holds.c.captured, holds.c.status, holds.c.created_at)
            .where(holds.c.account_id == tenant.account_id)
            .order_by(holds.c.created_at, holds.c.id)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [HoldRow(r.amount, r.captured, r.status) for r in rows]

    async def settled_cleanly(self) -> None:
        """Every hold settled or released, every balance the sum of its ledger entries."""
        ledger = self.services.accounts.ledger
        assert await ledger.open_holds() == 0
        assert await ledger.verify() == []

    async def post(self, path: str, body: Any, tenant: Tenant | None, **headers: str) -> Any:
        """A raw POST (`body` bytes as sent, anything else as JSON) with the tenant's key."""
        sent = {**(tenant.auth if tenant else {}), **headers}
        if isinstance(body, bytes):
            sent.setdefault("content-type", "application/json")
            return await self.http.post(path, content=body, headers=sent)
        return await self.http.post(path, json=body, headers=sent)

    def shutdown(self) -> Shutdown:
        """The app's shutdown state, which SIGTERM starts (found in its ASGI layers)."""
        layer: Any = getattr(self.app, "_front", None)
        while layer is not None:
            found = getattr(layer, "shutdown", None)
            if isinstance(found, Shutdown):
                return found
            layer = getattr(layer, "app", None)
        raise AssertionError("no ShutdownMiddleware in front of the app")


def sse_data(text: str) -> list[Any]:
    """The `data:` payloads of an OpenAI-style event stream ("[DONE]" kept as a string)."""
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


def error_of(resp: Any) -> dict[str, Any]:
    """The OpenAI envelope's `error` (asserting its shape: exactly those four fields)."""
    payload = orjson.loads(resp.content)
    assert set(payload) == {"error"}, payload
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def anthropic_error_of(resp: Any) -> dict[str, Any]:
    """Anthropic's envelope: {"type": "error", "error": {"type", "message"}}."""
    payload = orjson.loads(resp.content)
    assert set(payload) == {"type", "error"} and payload["type"] == "error", payload
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"type", "message"}, error
    return error


@asynccontextmanager
async def running_site(
    tmp_path: Path,
    settings: dict[str, Any] | None = None,
    backend: FakeBackend | None = None,
    *,
    url: str | None = None,
    more: Callable[[FakeBackend, FakeBackend], ModelRegistry] | None = None,
) -> AsyncIterator[Site]:
    """The app with its lifespan entered (as `tokendock serve` runs it) and clients on it;
    `url`: an existing database (a restart), else a fresh one; `more`: the registry made of
    the two fake models and others (upstream deployments)."""
    url = url or await migrated(tmp_path)
    config = Settings(data_dir=tmp_path, database_url=url, rate_tiers={}, **(settings or {}))
    chat = backend or FakeBackend()
    embed = FakeBackend(spec(EMBED, task="embedding"))
    registry = registry_of(chat, embed) if more is None else more(chat, embed)
    application = create_app(config, registry)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        transport2 = httpx2.ASGITransport(app=application)
        async with (
            httpx.AsyncClient(transport=transport, base_url=BASE) as http,
            httpx2.AsyncClient(transport=transport2, base_url=BASE) as http2,
        ):
            yield Site(application, chat, http, http2)


def cost(prompt: int, completion: int) -> int:
    """What the fake model charges: 1 µc a prompt token, 2 µc an output token."""
    return prompt + 2 * completion

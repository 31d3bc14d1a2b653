"""What is stored is bounded and paid for (issue 18, rows 4, 9, 11 and the storage quota), on
the real app with a scripted backend, through the official openai SDK and plain HTTP:

- `truncation: "auto"`: a continuation stores only the items its prompt kept (what it was
  billed for), so a chain's stored bytes grow with what it paid, not quadratically;
- only the fields the API defines are stored (no junk in `text.format`, `tool_choice`, chat
  messages); item ids are at most 64 characters of [A-Za-z0-9_-] (400 naming the field);
  metadata is bounded as OpenAI bounds it (400 naming `metadata`);
- an id that is not an id (NUL, other characters, too long) in a path or in
  `previous_response_id` is a 404 on every route that takes one;
- the per-account quota: over it a 400 `storage_quota_exceeded` and nothing billed; deleting
  frees it; the dashboard shows it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from tests.inprocess.conftest import GRANT, migrated, registry_of
from tests.inprocess.fake_backend import FakeBackend
from tokendock.app import create_app
from tokendock.config import Settings
from tokendock.storage.responses import stored_size
from tokendock.storage.tables import responses, stored_chat_completions

MODEL = "fake-model"  # context window 4096 (fake_backend.spec)
PASSWORD = "pw-long-enough"


class Site:
    def __init__(self, app: Any, http: httpx.AsyncClient, key: str, account_id: int, email: str):
        self.app = app
        self.http = http
        self.key = key
        self.account_id = account_id
        self.email = email
        self.oai = openai.AsyncOpenAI(
            api_key=key, base_url="http://tokendock/v1", http_client=http, max_retries=0
        )

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def balance(self) -> int:
        resp = await self.http.get("/v1/credits", headers=self.auth)
        return int(resp.json()["balance_micro_credits"])

    async def used(self) -> int:
        return int(await self.app.state.responses.quota.used(self.account_id))

    async def row_sizes(self) -> int:
        engine = self.app.state.responses.store._engine
        total = 0
        async with engine.connect() as conn:
            for table in (responses, stored_chat_completions):
                query = select(func.coalesce(func.sum(table.c.size), 0)).where(
                    table.c.account_id == self.account_id
                )
                total += int((await conn.execute(query)).scalar_one())
        return total


async def site_with(tmp_path: Path, quota: int) -> AsyncIterator[Site]:
    url = await migrated(tmp_path)
    settings = Settings(
        data_dir=tmp_path, database_url=url, rate_tiers={}, storage_quota_bytes=quota
    )
    application = create_app(settings, registry_of(FakeBackend()))
    services = application.state.services
    async with application.router.lifespan_context(application):
        email = f"s-{secrets.token_hex(4)}@example.com"
        account = await services.accounts.create_account(email, PASSWORD, grant=GRANT)
        new = await services.accounts.create_key(account, "test")
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://tokendock") as http:
            yield Site(application, http, new.secret, account, email)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async for each in site_with(tmp_path, 100_000_000):
        yield each


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Site]:
    async for each in site_with(tmp_path, 20_000):
        yield each


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: Any = exc.body
    return dict(body.get("error", body)) if isinstance(body, dict) else {}


# --- row 4: a continuation stores what its prompt kept --------------------------------------


async def test_truncated_chain_stores_only_the_kept_items(site: Site) -> None:
    store = site.app.state.responses.store
    word = "lorem ipsum " * 100  # 1,200 bytes: the 4,096-token window keeps ~3 of these
    previous = None
    for _ in range(12):
        resp = await site.oai.responses.create(
            model=MODEL,
            input=word,
            truncation="auto",
            max_output_tokens=16,
            previous_response_id=previous,
        )
        previous = resp.id
    last = await store.get(site.account_id, previous)
    assert last is not None
    kept = [*last.context, *last.input_items]
    assert 1 < len(kept) < 8  # a window's worth, not the 23 items of the whole chain
    assert await site.row_sizes() == await site.used()
    # A row holds at most one window's items (~4 KB and their ids); with the whole history
    # stored again, the 12th row alone held ~19 KB.
    assert stored_size(last) < 7_000
    items = await site.oai.responses.input_items.list(previous)
    assert [i.type for i in items.data] == ["message"]  # its own input, as sent


async def test_untruncated_continuation_still_reads_the_whole_history(site: Site) -> None:
    first = await site.oai.responses.create(model=MODEL, input="one")
    second = await site.oai.responses.create(
        model=MODEL, input="two", previous_response_id=first.id
    )
    rec = await site.app.state.responses.store.get(site.account_id, second.id)
    assert [i["type"] for i in rec.context] == ["message", "message"]  # "one" and the answer


# --- row 9: only defined fields; ids and metadata bounded -----------------------------------


async def test_junk_fields_are_not_stored(site: Site) -> None:
    junk = "j" * 200_000
    body = {
        "model": MODEL,
        "input": [{"type": "message", "role": "user", "content": "hi", "junk": junk}],
        "text": {"format": {"type": "json_object", "junk": junk}},
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {"type": "function", "name": "f", "junk": junk},
        "junk": junk,
    }
    resp = await site.http.post("/v1/responses", json=body, headers=site.auth)
    assert resp.status_code == 200, resp.text
    assert junk not in resp.text
    assert resp.json()["text"]["format"] == {"type": "json_object"}
    assert resp.json()["tool_choice"] == {"type": "function", "name": "f"}
    assert await site.used() < 5_000

    chat = {
        "model": MODEL,
        "store": True,
        "messages": [{"role": "user", "content": "hi", "junk": junk}],
    }
    before = await site.used()
    resp = await site.http.post("/v1/chat/completions", json=chat, headers=site.auth)
    assert resp.status_code == 200, resp.text
    assert 0 < await site.used() - before < 5_000
    got = await site.oai.chat.completions.messages.list(resp.json()["id"])
    assert got.data[0].content == "hi"


@pytest.mark.parametrize("item_id", ["x" * 65, "fc_\u0000", "fc 1", "fc/1", "", "fc_é"], ids=repr)
async def test_item_ids_are_bounded(site: Site, item_id: str) -> None:
    item = {"type": "function_call_output", "call_id": "call_1", "output": "4", "id": item_id}
    with pytest.raises(openai.BadRequestError) as caught:
        await site.oai.responses.create(model=MODEL, input=[item])  # type: ignore[list-item]
    assert error_of(caught.value)["param"] == "input[0].id"


async def test_a_valid_item_id_is_kept(site: Site) -> None:
    item_id = "fco_" + "a" * 60
    item = {"type": "function_call_output", "call_id": "call_1", "output": "4", "id": item_id}
    resp = await site.oai.responses.create(model=MODEL, input=[item])  # type: ignore[list-item]
    items = await site.oai.responses.input_items.list(resp.id)
    assert [i.id for i in items.data] == [item_id]


BAD_METADATA = [
    {f"k{i}": "v" for i in range(17)},
    {"k" * 65: "v"},
    {"k": "v" * 513},
    {"k": "a\u0000b"},
]


@pytest.mark.parametrize("meta", BAD_METADATA, ids=["17-keys", "long-key", "long-value", "nul"])
async def test_metadata_is_bounded_everywhere(site: Site, meta: dict[str, str]) -> None:
    before = await site.balance()
    with pytest.raises(openai.BadRequestError) as caught:
        await site.oai.responses.create(model=MODEL, input="hi", metadata=meta)
    assert error_of(caught.value)["param"].startswith("metadata")  # a NUL: `metadata.k`
    with pytest.raises(openai.BadRequestError) as caught:
        await site.oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], store=True, metadata=meta
        )
    assert error_of(caught.value)["param"].startswith("metadata")
    stored = await site.oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], store=True
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await site.oai.chat.completions.update(stored.id, metadata=meta)
    assert error_of(caught.value)["param"].startswith("metadata")
    assert await site.balance() == before - 13  # only the good completion was billed


async def test_metadata_at_the_bounds_is_accepted(site: Site) -> None:
    meta = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    resp = await site.oai.responses.create(model=MODEL, input="hi", metadata=meta)
    assert resp.metadata == meta


# --- row 11: an id that is not an id is not found, before any query -------------------------

BAD_IDS = ["abc%00", "resp_%00x", "a" * 65, "resp_%C3%A9", "resp_x%20y"]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_in_paths_are_not_found(site: Site, bad: str) -> None:
    calls = [
        ("GET", f"/v1/responses/{bad}"),
        ("DELETE", f"/v1/responses/{bad}"),
        ("GET", f"/v1/responses/{bad}/input_items"),
        ("POST", f"/v1/responses/{bad}/cancel"),
        ("GET", f"/v1/chat/completions/{bad}"),
        ("DELETE", f"/v1/chat/completions/{bad}"),
        ("GET", f"/v1/chat/completions/{bad}/messages"),
    ]
    for method, path in calls:
        resp = await site.http.request(method, path, headers=site.auth)
        assert resp.status_code == 404, (method, path, resp.text)
        assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
        assert "\x00" not in resp.json()["error"]["message"]
    resp = await site.http.post(
        f"/v1/chat/completions/{bad}", json={"metadata": {"a": "b"}}, headers=site.auth
    )
    assert resp.status_code == 404, resp.text


@pytest.mark.parametrize("bad", ["resp_\u0000", "r" * 65, "resp_é", "resp_ x"])
async def test_bad_previous_response_ids_are_not_found(site: Site, bad: str) -> None:
    """Not found (a NUL: refused by the parser first, a 400), never looked up."""
    before = await site.balance()
    for path in ("/v1/responses", "/v1/responses/input_tokens"):
        body = {"model": MODEL, "input": "hi", "previous_response_id": bad}
        resp = await site.http.post(path, json=body, headers=site.auth)
        assert resp.status_code == (400 if "\x00" in bad else 404), resp.text
        assert resp.json()["error"]["param"] == "previous_response_id"
    assert await site.balance() == before


# --- the storage quota -----------------------------------------------------------------------


async def test_over_the_quota_is_refused_unbilled_and_deleting_frees_it(small: Site) -> None:
    stored: list[str] = []
    while True:
        before = await small.balance()
        try:
            resp = await small.oai.responses.create(model=MODEL, input="x" * 2000)
        except openai.BadRequestError as exc:
            error = error_of(exc)
            break
        stored.append(resp.id)
        assert len(stored) < 20, "the quota never refused"
    assert error["code"] == "storage_quota_exceeded"
    assert "of its 0.02 MB quota" in error["message"]
    assert await small.balance() == before  # refused before admission: nothing billed
    assert await small.used() == await small.row_sizes()

    with pytest.raises(openai.BadRequestError) as caught:  # every stored object counts
        await small.oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 2000}], store=True
        )
    assert error_of(caught.value)["code"] == "storage_quota_exceeded"
    with pytest.raises(openai.BadRequestError) as caught:
        await small.oai.responses.create(model=MODEL, input="x" * 2000, background=True)
    assert error_of(caught.value)["code"] == "storage_quota_exceeded"
    assert await small.balance() == before

    # Not stored: not counted, not refused.
    await small.oai.responses.create(model=MODEL, input="x" * 2000, store=False)
    await small.oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )

    used = await small.used()
    await small.oai.responses.delete(stored[0])
    assert await small.used() < used
    again = await small.oai.responses.create(model=MODEL, input="x" * 2000)
    assert again.status == "completed"
    assert await small.used() == await small.row_sizes()


async def test_stored_chat_counts_and_frees(small: Site) -> None:
    made = await small.oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello"}], store=True
    )
    used = await small.used()
    assert used == await small.row_sizes() > 0
    await small.oai.chat.completions.update(made.id, metadata={"a": "b" * 300})
    assert await small.used() == await small.row_sizes() > used
    await small.oai.chat.completions.delete(made.id)
    assert await small.used() == 0


async def test_dashboard_shows_storage_used_of_the_quota(small: Site) -> None:
    await small.oai.responses.create(model=MODEL, input="x" * 500)
    page = await small.http.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    login = {"email": small.email, "password": PASSWORD, "csrf": csrf.group(1)}
    assert (await small.http.post("/login", data=login)).status_code == 303
    usage = await small.http.get("/dashboard/usage")
    assert usage.status_code == 200
    shown = re.search(r'data-testid="storage">([^<]+)<', usage.text)
    assert shown and shown.group(1) == "0.01 MB of 0.02 MB"  # rounded up: never "0" when used

"""The Conversations API and `/v1/responses` with `conversation`, in-process through the
official openai SDK, on SQLite and (when TOKENDOCK_TEST_POSTGRES_URL is set) PostgreSQL:
every route; another account's ids are not found on any of them; NUL and odd strings in ids,
cursors, metadata and item text; the storage quota; a response's turn appended (whole,
streamed, background); `conversation` with `previous_response_id` refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.server import new_database
from tests.inprocess.site import MODEL, Site, Tenant, error_of, running_site
from tests.integration.conftest import BACKENDS, _drop_postgres
from tokendock.storage.migrate import upgrade_async

ODD = "naïve “quotes” 'single' \\ back\tslash ☃ 🚀 <b>&amp;</b> %00 \u200b"


@pytest.fixture(params=BACKENDS)
async def db_site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Site]:
    backend: str = request.param
    url = await asyncio.to_thread(new_database, backend, tmp_path)
    await upgrade_async(url)
    settings = getattr(request, "param_settings", None) or {}
    try:
        async with running_site(tmp_path, settings, url=url) as each:
            yield each
    finally:
        if backend == "postgres":
            await _drop_postgres(url)


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def texts(items: Any) -> list[str]:
    return ["".join(part.text for part in item.content) for item in items]


async def test_every_route(db_site: Site) -> None:
    tenant = await db_site.tenant()
    oai = tenant.oai
    conv = await oai.conversations.create(
        items=[user("first"), {"role": "assistant", "content": "second"}],
        metadata={"topic": ODD[:60]},
    )
    assert conv.object == "conversation" and conv.id.startswith("conv_")
    assert conv.metadata == {"topic": ODD[:60]}
    got = await oai.conversations.retrieve(conv.id)
    assert got.id == conv.id and got.created_at == conv.created_at
    updated = await oai.conversations.update(conv.id, metadata={"k": "v"})
    assert updated.metadata == {"k": "v"}
    added = await oai.conversations.items.create(conv.id, items=[user(ODD), user("fourth")])
    assert [i.type for i in added.data] == ["message", "message"]
    assert texts(added.data) == [ODD, "fourth"]
    newest = await oai.conversations.items.list(conv.id, limit=2)
    assert texts(newest.data) == ["fourth", ODD] and newest.has_more
    rest = await oai.conversations.items.list(conv.id, limit=2, after=newest.data[-1].id)
    assert texts(rest.data) == ["second", "first"] and not rest.has_more
    every = [i async for i in oai.conversations.items.list(conv.id, order="asc", limit=1)]
    assert texts(every) == ["first", "second", ODD, "fourth"]
    one = await oai.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert one.id == added.data[0].id and texts([one]) == [ODD]
    after_delete = await oai.conversations.items.delete(one.id, conversation_id=conv.id)
    assert after_delete.id == conv.id and after_delete.object == "conversation"
    left = await oai.conversations.items.list(conv.id, order="asc")
    assert texts(left.data) == ["first", "second", "fourth"]
    gone = await oai.conversations.delete(conv.id)
    assert gone.deleted and gone.id == conv.id and gone.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        await oai.conversations.retrieve(conv.id)
    assert await used(db_site, tenant) == 0  # every byte freed


async def used(site: Site, tenant: Tenant) -> int:
    return int(await site.app.state.conversations.quota.used(tenant.account_id))


async def test_another_accounts_ids_are_not_found(db_site: Site) -> None:
    owner, other = await db_site.tenant(), await db_site.tenant()
    conv = await owner.oai.conversations.create(items=[user("mine")])
    item = (await owner.oai.conversations.items.list(conv.id)).data[0]
    base = f"/v1/conversations/{conv.id}"
    calls = [
        ("GET", base, None),
        ("POST", base, {"metadata": {"a": "b"}}),
        ("DELETE", base, None),
        ("GET", f"{base}/items", None),
        ("POST", f"{base}/items", {"items": [user("x")]}),
        ("GET", f"{base}/items/{item.id}", None),
        ("DELETE", f"{base}/items/{item.id}", None),
    ]
    for method, path, body in calls:
        resp = await db_site.http.request(method, path, json=body, headers=other.auth)
        assert resp.status_code == 404, (method, path, resp.text)
        assert error_of(resp)["type"] == "invalid_request_error"
    made = await db_site.post(
        "/v1/responses", {"model": MODEL, "input": "hi", "conversation": conv.id}, other
    )
    assert made.status_code == 404 and error_of(made)["param"] == "conversation"
    assert await db_site.balance(other) == await db_site.balance(owner)  # nothing billed
    still = await owner.oai.conversations.items.list(conv.id)
    assert [i.id for i in still.data] == [item.id]


async def test_nul_and_odd_strings(db_site: Site) -> None:
    tenant = await db_site.tenant()
    conv = await tenant.oai.conversations.create(items=[user(ODD)])
    base = f"/v1/conversations/{conv.id}"
    for path in (
        "/v1/conversations/conv_%00x",
        "/v1/conversations/conv_%E2%98%83",
        f"{base}/items/msg_%00",
        f"/v1/conversations/{'c' * 65}",
    ):
        resp = await db_site.http.get(path, headers=tenant.auth)
        assert resp.status_code == 404, (path, resp.text)
    for after in ("msg_\x00", "msg_☃", "x" * 65, "msg_unknown"):
        resp = await db_site.http.get(f"{base}/items", params={"after": after}, headers=tenant.auth)
        assert resp.status_code == 400 and error_of(resp)["param"] == "after", after
    for body in (
        b'{"metadata": {"k": "a\\u0000b"}}',
        b'{"items": [{"role": "user", "content": "a\\u0000b"}]}',
        b'{"items": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}",'
        b' "id": "fc_\\u2603"}]}',
    ):
        resp = await db_site.post("/v1/conversations", body, tenant)
        assert resp.status_code == 400, body
    resp = await db_site.post(
        "/v1/responses", {"model": MODEL, "input": "hi", "conversation": "conv_\x00"}, tenant
    )
    assert resp.status_code == 400  # a NUL in any string is refused at the door
    resp = await db_site.post(
        "/v1/responses", {"model": MODEL, "input": "hi", "conversation": "conv_☃"}, tenant
    )
    assert resp.status_code == 404 and error_of(resp)["param"] == "conversation"
    listed = await tenant.oai.conversations.items.list(conv.id)
    assert texts(listed.data) == [ODD]


async def test_bounds(db_site: Site) -> None:
    tenant = await db_site.tenant()
    resp = await db_site.post("/v1/conversations", {"items": [user("x")] * 21}, tenant)
    assert resp.status_code == 400 and error_of(resp)["param"] == "items"
    conv = await tenant.oai.conversations.create()
    resp = await db_site.post(f"/v1/conversations/{conv.id}/items", {"items": []}, tenant)
    assert resp.status_code == 400
    resp = await db_site.post(
        f"/v1/conversations/{conv.id}/items", {"items": [{"type": "nope"}]}, tenant
    )
    assert resp.status_code == 400 and error_of(resp)["param"] == "items[0].type"
    resp = await db_site.http.get(
        f"/v1/conversations/{conv.id}/items", params={"limit": "101"}, headers=tenant.auth
    )
    assert resp.status_code == 400 and error_of(resp)["param"] == "limit"


async def test_response_in_a_conversation(db_site: Site) -> None:
    tenant = await db_site.tenant()
    oai = tenant.oai
    conv = await oai.conversations.create(items=[user("Remember: the code is 42.")])
    made = await oai.responses.create(model=MODEL, input="What is the code?", conversation=conv.id)
    assert made.conversation is not None and made.conversation.id == conv.id
    turns = db_site.backend.runs[-1].req.turns
    assert [t.content for t in turns] == ["Remember: the code is 42.", "What is the code?"]
    listed = await oai.conversations.items.list(conv.id, order="asc")
    assert texts(listed.data) == ["Remember: the code is 42.", "What is the code?", "Hello, world"]
    assert listed.data[-1].id == made.output[0].id
    again = await oai.responses.retrieve(made.id)
    assert again.conversation is not None and again.conversation.id == conv.id

    stream = await oai.responses.create(
        model=MODEL, input="Streamed?", conversation={"id": conv.id}, stream=True
    )
    kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.completed"
    unstored = await oai.responses.create(
        model=MODEL, input="Not stored?", conversation=conv.id, store=False
    )
    with pytest.raises(openai.NotFoundError):
        await oai.responses.retrieve(unstored.id)
    background = await oai.responses.create(
        model=MODEL, input="Later?", conversation=conv.id, background=True
    )
    for _ in range(1000):
        if (await oai.responses.retrieve(background.id)).status == "completed":
            break
        await asyncio.sleep(0.005)
    listed = await oai.conversations.items.list(conv.id, order="asc", limit=100)
    assert texts(listed.data)[3:] == [
        "Streamed?",
        "Hello, world",
        "Not stored?",
        "Hello, world",
        "Later?",
        "Hello, world",
    ]
    last = db_site.backend.runs[-1].req.turns
    assert len(last) == 8 and last[-1].content == "Later?"


async def test_conversation_with_previous_response_is_refused(db_site: Site) -> None:
    tenant = await db_site.tenant()
    conv = await tenant.oai.conversations.create()
    first = await tenant.oai.responses.create(model=MODEL, input="hi")
    resp = await db_site.post(
        "/v1/responses",
        {"model": MODEL, "input": "x", "conversation": conv.id, "previous_response_id": first.id},
        tenant,
    )
    assert resp.status_code == 400 and error_of(resp)["param"] == "conversation"
    resp = await db_site.post(
        "/v1/responses", {"model": MODEL, "input": "x", "conversation": {"nope": 1}}, tenant
    )
    assert resp.status_code == 400 and error_of(resp)["param"] == "conversation"


@pytest.fixture
async def small(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_site(tmp_path, {"storage_quota_bytes": 2000}) as each:
        yield each


async def test_storage_quota(small: Site) -> None:
    tenant = await small.tenant()
    big = "x" * 1500
    conv = await tenant.oai.conversations.create(items=[user(big)])
    with pytest.raises(openai.BadRequestError) as refused:
        await tenant.oai.conversations.items.create(conv.id, items=[user(big)])
    assert refused.value.code == "storage_quota_exceeded"
    with pytest.raises(openai.BadRequestError) as again:
        await tenant.oai.conversations.create(items=[user(big)])
    assert again.value.code == "storage_quota_exceeded"
    before = await small.balance(tenant)
    with pytest.raises(openai.BadRequestError) as response:
        await tenant.oai.responses.create(model=MODEL, input=big, conversation=conv.id, store=False)
    assert response.value.code == "storage_quota_exceeded"
    assert await small.balance(tenant) == before  # refused before admission: nothing billed
    await tenant.oai.conversations.delete(conv.id)
    assert await used(small, tenant) == 0
    await tenant.oai.conversations.items.create(
        (await tenant.oai.conversations.create()).id, items=[user(big)]
    )

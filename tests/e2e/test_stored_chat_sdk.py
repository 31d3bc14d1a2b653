"""Stored chat completions through the official openai SDK against the real server (SQLite and
PostgreSQL): `store: true` with metadata, list (filters, pagination, order), retrieve, update,
delete, the stored messages; a stored stream comes back whole; another account's ids are 404;
without `store` nothing is kept."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

ASK = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def other(server: Server) -> Iterator[openai.OpenAI]:
    """A client of another account (funded)."""
    key = server.new_key(f"other-{secrets.token_hex(4)}@example.com", "5")
    with openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=120) as client:
        yield client


def stored(client: openai.OpenAI, run: str, **more: object) -> openai.types.chat.ChatCompletion:
    metadata = {"run": run, **more.pop("metadata", {})}  # type: ignore[dict-item]
    return client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=4,
        temperature=0,
        store=True,
        metadata=metadata,
        **more,  # type: ignore[arg-type]
    )


def test_create_retrieve_update_delete(client: openai.OpenAI) -> None:
    run = secrets.token_hex(4)
    made = stored(client, run, metadata={"topic": "colours"})
    got = client.chat.completions.retrieve(made.id)
    assert got.id == made.id and got.object == "chat.completion" and got.model == MODEL
    assert got.choices[0].message.content == made.choices[0].message.content
    assert got.choices[0].finish_reason == made.choices[0].finish_reason
    assert got.usage == made.usage
    assert got.created == made.created
    assert got.metadata == {"run": run, "topic": "colours"}

    updated = client.chat.completions.update(made.id, metadata={"run": run, "topic": "paint"})
    assert updated.id == made.id
    assert updated.metadata == {"run": run, "topic": "paint"}
    listed = client.chat.completions.list(metadata={"run": run, "topic": "paint"})
    assert [c.id for c in listed.data] == [made.id]
    assert client.chat.completions.list(metadata={"run": run, "topic": "colours"}).data == []

    gone = client.chat.completions.delete(made.id)
    assert (gone.id, gone.object, gone.deleted) == (made.id, "chat.completion.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.delete(made.id)
    assert client.chat.completions.list(metadata={"run": run}).data == []


def test_list_filters_and_pagination(client: openai.OpenAI) -> None:
    run = secrets.token_hex(4)
    made = [stored(client, run, metadata={"i": str(i)}).id for i in range(5)]
    first = client.chat.completions.list(metadata={"run": run}, limit=2)
    assert [c.id for c in first.data] == made[:2] and first.has_more is True
    assert first.model_extra["first_id"] == made[0]  # type: ignore[index]
    assert first.model_extra["last_id"] == made[1]  # type: ignore[index]
    every = [c.id for c in client.chat.completions.list(metadata={"run": run}, limit=2)]
    assert every == made  # the SDK follows `after` page by page
    newest = client.chat.completions.list(metadata={"run": run}, limit=3, order="desc")
    assert [c.id for c in newest.data] == made[::-1][:3]
    after = client.chat.completions.list(metadata={"run": run}, after=made[1], limit=10)
    assert [c.id for c in after.data] == made[2:] and after.has_more is False
    one = client.chat.completions.list(metadata={"run": run, "i": "3"})
    assert [c.id for c in one.data] == [made[3]]
    assert [c.id for c in client.chat.completions.list(model=MODEL, metadata={"run": run})] == made
    assert client.chat.completions.list(model="no-such-model", metadata={"run": run}).data == []
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.list(after="chatcmpl-nope")
    assert bad.value.body["param"] == "after"  # type: ignore[index]


def test_messages_are_the_request_paginated(client: openai.OpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": "Hello."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Name "}, {"type": "text", "text": "a fruit."}],
        },
    ]
    made = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=3,
        store=True,  # type: ignore[arg-type]
    )
    page = client.chat.completions.messages.list(made.id, limit=3)
    assert [m.id for m in page.data] == [f"{made.id}-{i}" for i in range(3)]
    assert page.has_more is True
    every = list(client.chat.completions.messages.list(made.id, limit=3))
    assert [(m.role, m.content) for m in every] == [
        ("system", "You are terse."),
        ("user", "Hi."),
        ("assistant", "Hello."),
        ("user", "Name a fruit."),
    ]
    assert every[3].content_parts is not None and len(every[3].content_parts) == 2
    newest = client.chat.completions.messages.list(made.id, order="desc", limit=1)
    assert [m.id for m in newest.data] == [f"{made.id}-3"]


def test_a_stored_stream_is_kept_whole(client: openai.OpenAI) -> None:
    run = secrets.token_hex(4)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        stream=True,
        store=True,
        metadata={"run": run},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next(
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    )
    got = client.chat.completions.retrieve(chunks[0].id)
    assert got.object == "chat.completion" and got.created == chunks[0].created
    assert got.choices[0].message.content == text and text
    assert got.choices[0].finish_reason == finish
    assert got.usage is not None and got.usage.completion_tokens >= 1
    assert [c.id for c in client.chat.completions.list(metadata={"run": run})] == [got.id]


def test_another_accounts_ids_are_not_found(client: openai.OpenAI, other: openai.OpenAI) -> None:
    run = secrets.token_hex(4)
    made = stored(client, run)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.update(made.id, metadata={"stolen": "yes"})
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.messages.list(made.id)
    assert other.chat.completions.list(metadata={"run": run}).data == []
    with pytest.raises(openai.BadRequestError):  # nor is it a cursor in their list
        other.chat.completions.list(after=made.id)
    theirs = stored(other, run)
    assert [c.id for c in client.chat.completions.list(metadata={"run": run})] == [made.id]
    assert [c.id for c in other.chat.completions.list(metadata={"run": run})] == [theirs.id]
    got = client.chat.completions.retrieve(made.id)  # untouched by the other account's calls
    assert got.metadata == {"run": run}


def test_without_store_nothing_is_kept(client: openai.OpenAI, server: Server) -> None:
    plain = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=2,
        metadata={"kept": "no"},  # type: ignore[arg-type]
    )
    streamed = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=2,
            stream=True,  # type: ignore[arg-type]
        )
    )
    off = client.chat.completions.create(
        model=MODEL,
        messages=ASK,
        max_tokens=2,
        store=False,  # type: ignore[arg-type]
    )
    for made in (plain.id, streamed[0].id, off.id):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.retrieve(made)
    assert client.chat.completions.list(metadata={"kept": "no"}).data == []


def test_metadata_limits_are_400s(client: openai.OpenAI, server: Server) -> None:
    too_many = {f"k{i}": "v" for i in range(17)}
    with pytest.raises(openai.BadRequestError) as bad:
        stored(client, "x", metadata=too_many)
    assert bad.value.body["param"] == "metadata"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        stored(client, "x", metadata={"long": "v" * 513})
    assert bad.value.body["param"].startswith("metadata")  # type: ignore[index]
    auth = {"Authorization": f"Bearer {server.key}"}
    listed = httpx.get(f"{server.v1}/chat/completions?limit=101", headers=auth)
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "limit"
    listed = httpx.get(f"{server.v1}/chat/completions?metadata=x", headers=auth)
    assert listed.status_code == 400 and listed.json()["error"]["param"] == "metadata"
    assert httpx.get(f"{server.v1}/chat/completions").status_code == 401
    # A NUL character (which PostgreSQL cannot store) is a 400 in metadata, and names nothing.
    with pytest.raises(openai.BadRequestError):
        stored(client, "x", metadata={"nul": "a\x00b"})
    made = stored(client, secrets.token_hex(4))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.update(made.id, metadata={"a\x00": "b"})
    assert httpx.get(f"{server.v1}/chat/completions/x%00", headers=auth).status_code == 404
    nul = httpx.get(f"{server.v1}/chat/completions?metadata%5Bk%5D=%00&model=%00", headers=auth)
    assert nul.status_code == 200 and nul.json()["data"] == []
    after = httpx.get(f"{server.v1}/chat/completions?after=%00", headers=auth)
    assert after.status_code == 400 and after.json()["error"]["param"] == "after"

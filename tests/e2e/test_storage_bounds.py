"""What is stored is bounded and paid for, against the real server and model (SQLite and
PostgreSQL), through the official openai SDK: item ids over 64 characters are a 400, an id
with a NUL is a 404 (never a 500 on PostgreSQL), metadata over OpenAI's bounds is a 400, a
truncated continuation stores only the items its prompt kept, and over the per-account storage
quota (a server started with a small one) a request that would store is a 400
`storage_quota_exceeded`, billed nothing, until something is deleted; the dashboard shows the
account's storage against its quota."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from sqlalchemy import select

from tests.e2e.conftest import MODEL
from tests.e2e.dashboard import Visitor
from tests.e2e.server import BACKENDS, Server, start_server
from tokendock.storage.db import create_engine
from tokendock.storage.tables import responses

QUOTA = 20_000  # bytes: a handful of stored responses


@pytest.fixture(scope="module", params=BACKENDS)
def small(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A server whose accounts may each store QUOTA bytes."""
    workdir = tmp_path_factory.mktemp(f"quota-{request.param}")
    srv = start_server(
        workdir, {"TOKENDOCK_STORAGE_QUOTA_BYTES": str(QUOTA)}, backend=request.param
    )
    yield srv
    srv.stop()


def client_of(server: Server) -> tuple[openai.OpenAI, str]:
    """A fresh funded account's client (its own quota) and its key."""
    key = server.new_key(f"store-{secrets.token_hex(4)}@example.com", "5")
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0, timeout=120), key


def balance(server: Server, key: str) -> int:
    got = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {key}"})
    return int(got.json()["balance_micro_credits"])


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: Any = exc.body
    return dict(body.get("error", body)) if isinstance(body, dict) else {}


def stored_row(server: Server, response_id: str) -> dict[str, Any]:
    """The response's row as the server wrote it."""

    async def read() -> dict[str, Any]:
        engine = create_engine(server.database_url)
        try:
            async with engine.connect() as conn:
                query = select(responses).where(responses.c.id == response_id)
                return dict((await conn.execute(query)).mappings().one())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_item_ids_over_64_characters_are_refused(small: Server) -> None:
    client, _ = client_of(small)
    item = {"type": "function_call_output", "call_id": "call_1", "output": "4", "id": "i" * 65}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input=[item], max_output_tokens=4)  # type: ignore[list-item]
    assert error_of(caught.value)["param"] == "input[0].id"


def test_ids_with_a_nul_are_not_found(small: Server) -> None:
    client, key = client_of(small)
    auth = {"Authorization": f"Bearer {key}"}
    for method, path in [
        ("GET", "/responses/abc%00"),
        ("DELETE", "/responses/abc%00"),
        ("GET", "/responses/abc%00/input_items"),
        ("POST", "/responses/abc%00/cancel"),
        ("GET", "/chat/completions/abc%00"),
        ("DELETE", "/chat/completions/abc%00"),
        ("GET", "/chat/completions/abc%00/messages"),
    ]:
        got = httpx.request(method, small.v1 + path, headers=auth)
        assert got.status_code == 404, (method, path, got.text)
        assert set(got.json()["error"]) == {"message", "type", "param", "code"}
    for bad, status in [("resp_\x00", 400), ("resp_" + "r" * 60, 404), ("resp_é", 404)]:
        # A NUL is refused by the parser (400) before anything looks it up; others: 404.
        with pytest.raises(openai.APIStatusError) as caught:
            client.responses.create(model=MODEL, input="hi", previous_response_id=bad)
        assert caught.value.status_code == status
        assert error_of(caught.value)["param"] == "previous_response_id"


@pytest.mark.parametrize(
    "meta",
    [{f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}],
    ids=["17-keys", "long-key", "long-value"],
)
def test_metadata_over_the_bounds_is_refused(small: Server, meta: dict[str, str]) -> None:
    client, _ = client_of(small)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=MODEL, input="hi", metadata=meta)
    assert error_of(caught.value)["param"] == "metadata"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], store=True, metadata=meta
        )
    assert error_of(caught.value)["param"] == "metadata"


def test_a_truncated_continuation_stores_only_the_kept_items(small: Server) -> None:
    client, _ = client_of(small)
    text = "The quick brown fox jumps over the lazy dog. " * 40  # 1,800 bytes
    previous = None
    for _ in range(4):
        resp = client.responses.create(
            model=MODEL,
            input=text,
            truncation="auto",
            max_output_tokens=4,
            temperature=0,
            store=True,
            previous_response_id=previous,
        )
        previous = resp.id
    assert previous is not None
    row = stored_row(small, previous)
    context = orjson.loads(row["context"])
    # The window (4,096 tokens, counted as bytes before admission) keeps two earlier questions
    # at most: the other 3 items of the chain were dropped from the prompt and are not stored.
    assert len(context) < 6
    assert row["size"] < 3 * 2 * len(text)
    items = client.responses.input_items.list(previous)
    assert len(items.data) == 1


def test_over_the_quota_a_stored_request_is_refused_unbilled(small: Server) -> None:
    client, key = client_of(small)
    made: list[str] = []
    ask = "Say hi. " + "x" * 3000
    while True:
        before = balance(small, key)
        try:
            made.append(client.responses.create(model=MODEL, input=ask, max_output_tokens=4).id)
        except openai.BadRequestError as exc:
            error = error_of(exc)
            break
        assert len(made) < 10, "the quota never refused"
    assert error["code"] == "storage_quota_exceeded"
    assert "0.02 MB" in error["message"]
    assert balance(small, key) == before
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": ask}], store=True, max_tokens=4
        )
    assert error_of(caught.value)["code"] == "storage_quota_exceeded"
    assert balance(small, key) == before
    client.responses.create(model=MODEL, input=ask, max_output_tokens=4, store=False)  # fine

    client.responses.delete(made[0])  # deleting frees the space
    again = client.responses.create(model=MODEL, input=ask, max_output_tokens=4)
    assert again.status in ("completed", "incomplete")


def test_the_dashboard_shows_storage_against_the_quota(small: Server) -> None:
    email, password = f"dash-{secrets.token_hex(4)}@example.com", "correct horse battery"
    small.cli("accounts", "create", email, "--grant", "5", "--password", password)
    key = re.search(r"(td-[A-Za-z0-9]+)", small.cli("keys", "create", email))
    assert key
    with openai.OpenAI(base_url=small.v1, api_key=key.group(1), max_retries=0) as client:
        client.responses.create(model=MODEL, input="Say hi.", max_output_tokens=4)
    visitor = Visitor(small.base_url)
    assert visitor.login(email, password).status_code == 303
    page = visitor.get("/dashboard/usage")
    assert page.status_code == 200
    shown = re.search(r'data-testid="storage">([^<]+)<', page.text)
    assert shown and shown.group(1) == "0.01 MB of 0.02 MB"  # rounded up: never "0" when used

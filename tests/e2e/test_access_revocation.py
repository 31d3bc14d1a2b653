"""Disabling an account (the admin page, the CLI), or revoking a key, ends its running work on
the real server — on SQLite and PostgreSQL: an open stream ends with an error event naming why
(`account_disabled`, `key_revoked`) long before its max_tokens, a background response ends
`failed`, and each is charged for what it produced (ledger verified). With two replicas
sharing PostgreSQL, disabling through one ends the stream running on the other.

The CLI is another process writing the shared database, like another replica: the server
learns of the change from the database alone."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from tests.e2e.dashboard import Visitor
from tests.e2e.money import assert_adds_up, read
from tests.e2e.server import POSTGRES_URL, Server, start_server
from tests.e2e.test_responses_sdk import STORY
from tests.e2e.test_shutdown import GEMMA
from tokendock.storage.db import create_engine
from tokendock.storage.tables import responses

MODEL = "gemma-3-270m"
MAX = 512  # the catalog's cap; far more than a request makes before the change lands
BEFORE = 5  # content chunks read before the change
GRANT = 5_000_000  # micro-credits: 5 credits


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    key: str
    key_id: str


def account(srv: Server) -> Account:
    """A fresh account with credits and one key."""
    email = f"rev-{secrets.token_hex(4)}@example.com"
    made = re.search(r"account (\d+)", srv.cli("accounts", "create", email, "--grant", "5"))
    key = re.search(r"key (\d+): (td-[A-Za-z0-9]+)", srv.cli("keys", "create", email))
    assert made and key
    return Account(made.group(1), email, key.group(2), key.group(1))


def stream_until_it_ends(
    srv: Server, key: str, change: Callable[[], object]
) -> tuple[int, list[Any]]:
    """Stream a long answer; after BEFORE content chunks call `change()`, then read on to the
    end. Returns (content chunks in all, the events after the last content chunk)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": STORY}],
        "max_tokens": MAX,
        "stream": True,
    }
    content = 0
    tail: list[Any] = []
    with httpx.stream(
        "POST",
        srv.v1 + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            event = data if data == "[DONE]" else json.loads(data)
            choices = event.get("choices") if isinstance(event, dict) else None
            if choices and choices[0]["delta"].get("content"):
                content += 1
                tail = []
                if content == BEFORE:
                    change()
            else:
                tail.append(event)
    return content, tail


def admin_visitor(srv: Server) -> Visitor:
    email = f"admin-{secrets.token_hex(4)}@example.com"
    srv.cli("accounts", "create", email, "--admin", "--password", "correct horse battery")
    visitor = Visitor(srv.base_url)
    assert visitor.login(email).status_code == 303
    return visitor


def disable_on_admin_page(visitor: Visitor, who: Account) -> None:
    visitor.get("/admin")
    resp = visitor.post(f"/admin/accounts/{who.id}/disable", {})
    assert resp.status_code == 303, resp.text[:500]


def assert_ended(content: int, tail: list[Any], code: str) -> None:
    assert content < MAX // 2, "the stream was not stopped"
    assert tail[-1] == "[DONE]"
    error = tail[-2]["error"]
    assert error["code"] == code, error


def charged_once(srv: Server, email: str, least: int = BEFORE) -> dict[str, Any]:
    """The account's one usage row: at least `least` tokens generated, charged (the ledger's
    agreement is assert_adds_up's)."""
    rows = [r for r in read(srv.database_url).usage if r["email"] == email]
    assert len(rows) == 1, rows
    assert rows[0]["completion_tokens"] >= least, rows
    return rows[0]


def test_the_cli_disabling_an_account_ends_its_stream(server: Server) -> None:
    who = account(server)
    disable = lambda: server.cli("accounts", "disable", who.email)  # noqa: E731
    content, tail = stream_until_it_ends(server, who.key, disable)
    assert_ended(content, tail, "account_disabled")
    row = charged_once(server, who.email)
    assert row["completion_tokens"] >= content
    assert_adds_up(server, {who.email: GRANT})
    refused = httpx.post(
        server.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {who.key}"},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert refused.status_code == 401  # and its key no longer works


def test_revoking_a_key_ends_its_stream(server: Server) -> None:
    who = account(server)
    revoke = lambda: server.cli("keys", "revoke", who.email, who.key_id)  # noqa: E731
    content, tail = stream_until_it_ends(server, who.key, revoke)
    assert_ended(content, tail, "key_revoked")
    charged_once(server, who.email)
    assert_adds_up(server, {who.email: GRANT})


def test_the_admin_page_disabling_ends_a_background_response(server: Server) -> None:
    who = account(server)
    client = openai.OpenAI(base_url=server.v1, api_key=who.key, max_retries=0, timeout=60)
    made = client.responses.create(model=MODEL, input=STORY, max_output_tokens=MAX, background=True)
    visitor = admin_visitor(server)
    for _ in range(600):  # until it is generating
        if client.responses.retrieve(made.id).status == "in_progress":
            break
        time.sleep(0.1)
    time.sleep(1.0)  # it has produced something
    disable_on_admin_page(visitor, who)
    for _ in range(300):  # its key no longer reads it: the row, from the database
        final = response_row(server, made.id)
        if final["status"] not in ("queued", "in_progress"):
            break
        time.sleep(0.1)
    assert final["status"] == "failed", final
    assert json.loads(final["error"])["code"] == "account_disabled"
    # What it generated before the change (the engine may have been busy: perhaps little).
    assert charged_once(server, who.email, least=0)["completion_tokens"] < MAX
    assert_adds_up(server, {who.email: GRANT})


def response_row(srv: Server, response_id: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        engine = create_engine(srv.database_url)
        try:
            async with engine.connect() as conn:
                query = select(responses.c.status, responses.c.error).where(
                    responses.c.id == response_id
                )
                return dict((await conn.execute(query)).mappings().one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    if not POSTGRES_URL:
        pytest.skip("replicas share PostgreSQL (TOKENDOCK_TEST_POSTGRES_URL)")
    models = tmp_path / "models.toml"
    models.write_text(GEMMA)
    env = {"TOKENDOCK_MODELS_FILE": str(models)}
    a = start_server(tmp_path, env, backend="postgres")
    try:
        b = start_server(tmp_path, env, database_url=a.database_url)
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def test_disabling_on_one_replica_ends_the_stream_on_the_other(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    who = account(a)
    visitor = admin_visitor(a)
    content, tail = stream_until_it_ends(b, who.key, lambda: disable_on_admin_page(visitor, who))
    assert_ended(content, tail, "account_disabled")
    charged_once(b, who.email)
    assert_adds_up(a, {who.email: GRANT})

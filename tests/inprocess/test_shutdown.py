"""Shutdown settles what is running, in-process (ported from tests/e2e/test_shutdown.py, whose
signal and process handling stays there): once shutdown begins (what SIGTERM starts), a new
request gets a 503 (Anthropic's 529 on /v1/messages); a request in flight that finishes within
the grace period is answered and charged in full; one still running at the deadline is ended —
a stream with an error event and [DONE], a whole answer with a 503 — billed for what it
produced, the rest of its hold released; and a background response still running when the app
stops ends `failed`, billed, its hold settled. Runs are held running by the fake backend."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from tests.inprocess.conftest import GRANT
from tests.inprocess.fake_backend import PROMPT_TOKENS, FakeBackend, Script
from tests.inprocess.site import MODEL, Site, anthropic_error_of, cost, error_of, running_site
from tokendock.storage.db import create_engine
from tokendock.storage.tables import accounts, holds, responses, usage_records

MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
HOLD_AFTER = 2


def held(backend: FakeBackend) -> asyncio.Event:
    gate = asyncio.Event()
    backend.script = Script(pieces=("x",) * 20, hold=gate, hold_after=HOLD_AFTER)
    return gate


def body(stream: bool) -> dict[str, Any]:
    return {"model": MODEL, "messages": MSGS, "max_tokens": 50, "stream": stream}


async def refused_while_shutting_down(site: Site) -> None:
    tenant = await site.tenant()
    late = await site.post(CHAT, body(False), tenant)
    assert late.status_code == 503
    assert error_of(late)["code"] == "server_shutting_down"
    claude = await site.post(
        "/v1/messages", {"model": MODEL, "max_tokens": 5, "messages": MSGS}, tenant
    )
    assert claude.status_code == 529
    assert anthropic_error_of(claude)["type"] == "overloaded_error"


async def test_within_the_grace_period_a_request_finishes_and_pays_in_full(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path, {"shutdown_grace_seconds": 30}) as site:
        tenant = await site.tenant()
        gate = held(site.backend)
        running = asyncio.create_task(site.post(CHAT, body(True), tenant))
        await asyncio.wait_for(site.backend.held(0), 5)
        site.shutdown().begin()
        await refused_while_shutting_down(site)
        gate.set()
        done = await running
        assert done.status_code == 200
        events = [e for e in done.text.splitlines() if e.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and "error" not in events[-2]
        assert await site.balance(tenant) == GRANT - cost(PROMPT_TOKENS, 20)
        await site.settled_cleanly()


async def test_at_the_deadline_requests_end_billed_for_what_they_produced(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path, {"shutdown_grace_seconds": 0.1}) as site:
        streamer, whole = await site.tenant(), await site.tenant()
        held(site.backend)  # never let go: only the deadline ends them
        stream = asyncio.create_task(site.post(CHAT, body(True), streamer))
        await asyncio.wait_for(site.backend.held(0), 5)
        answer = asyncio.create_task(site.post(CHAT, body(False), whole))
        await asyncio.wait_for(site.backend.held(1), 5)
        site.shutdown().begin()

        streamed = await asyncio.wait_for(stream, 10)
        assert streamed.status_code == 200
        events = [line[6:] for line in streamed.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert orjson.loads(events[-2])["error"]["code"] == "server_shutting_down"
        cut = await asyncio.wait_for(answer, 10)
        assert cut.status_code == 503
        assert error_of(cut)["code"] == "server_shutting_down"

        produced = cost(PROMPT_TOKENS, HOLD_AFTER)  # 7 prompt tokens, 2 pieces each
        for tenant in (streamer, whole):
            assert await site.balance(tenant) == GRANT - produced
            (hold,) = await site.holds(tenant)
            assert (hold.amount, hold.captured, hold.status) == (107, produced, "settled")
            (row,) = await site.usage(tenant)
            assert row["completion_tokens"] == HOLD_AFTER and row["cost"] == produced
        assert all(run.closed for run in site.backend.runs)  # the work stopped
        await site.settled_cleanly()


async def test_a_background_response_running_at_stop_ends_failed_and_billed(
    tmp_path: Path,
) -> None:
    backend = FakeBackend()
    held(backend)  # never let go: the app stops while it runs
    async with running_site(tmp_path, backend=backend) as site:
        tenant = await site.tenant()
        made = await tenant.oai.responses.create(
            model=MODEL, input="hi", max_output_tokens=50, background=True
        )
        await asyncio.wait_for(backend.held(0), 5)
        url = site.services.settings.database_url_or_default()
    # The lifespan has ended: read what it left in the database.
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            record = (await conn.execute(select(responses).where(responses.c.id == made.id))).one()
            balance = (
                await conn.execute(
                    select(accounts.c.balance).where(accounts.c.id == tenant.account_id)
                )
            ).scalar_one()
            open_holds = (
                await conn.execute(select(holds.c.id).where(holds.c.status == "open"))
            ).all()
            rows = (
                await conn.execute(
                    select(usage_records).where(usage_records.c.account_id == tenant.account_id)
                )
            ).all()
    finally:
        await engine.dispose()
    assert record.status == "failed"
    assert "shut down" in str(record.error)
    assert open_holds == []
    produced = cost(PROMPT_TOKENS, HOLD_AFTER)
    assert balance == GRANT - produced
    assert len(rows) == 1 and rows[0].completion_tokens == HOLD_AFTER

"""The Responses API's background and stored responses, in-process through the openai SDK
(ported from tests/e2e/test_responses_sdk.py): create in the background → retrieve while it
runs → cancel (billed for what it made, once), a background answer polled to its end, `store`
(retrieve, delete, store=false), and another account's ids, which are not found on any route.

The fake backend holds each run after `HOLD_AFTER` pieces until the test lets it go, so "still
running" is a fact the test made, not a race it hopes to win."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from tests.inprocess.conftest import GRANT
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tests.inprocess.site import MODEL, Site, Tenant, cost

HOLD_AFTER = 2


async def final(tenant: Tenant, response_id: str) -> Any:
    """The response once its background task wrote a final state (bounded wait)."""
    for _ in range(1000):
        got = await tenant.oai.responses.retrieve(response_id)
        if got.status not in ("queued", "in_progress"):
            return got
        await asyncio.sleep(0.005)
    raise AssertionError(f"{response_id} still {got.status}")


async def usage_row(site: Site, tenant: Tenant, request_id: str) -> dict[str, Any]:
    for _ in range(1000):  # the settlement lands as the background task ends
        rows = [r for r in await site.usage(tenant) if r["request_id"] == request_id]
        if rows:
            return rows[0]
        await asyncio.sleep(0.005)
    raise AssertionError(f"no usage row for {request_id}")


def held(site: Site) -> asyncio.Event:
    gate = asyncio.Event()
    site.backend.script = Script(pieces=("x",) * 50, hold=gate, hold_after=HOLD_AFTER)
    return gate


async def test_background_create_retrieve_cancel_is_billed_once(site: Site) -> None:
    tenant = await site.tenant()
    held(site)  # never let go: only the cancel ends it
    raw = await tenant.oai.responses.with_raw_response.create(
        model=MODEL, input="Tell me a story.", max_output_tokens=100, background=True
    )
    made = raw.parse()
    assert made.background is True and made.status in ("queued", "in_progress")
    await asyncio.wait_for(site.backend.held(0), 5)
    running = await tenant.oai.responses.retrieve(made.id)
    assert running.status == "in_progress" and running.id == made.id

    cancelled = await tenant.oai.responses.cancel(made.id)
    assert cancelled.status == "cancelled"
    done = await final(tenant, made.id)
    assert done.status == "cancelled"
    assert done.usage is not None and done.usage.output_tokens == HOLD_AFTER
    assert site.backend.runs[0].closed  # the work stopped

    row = await usage_row(site, tenant, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, HOLD_AFTER)
    assert row["status"] == "client_disconnected"
    assert row["cost"] == cost(PROMPT_TOKENS, HOLD_AFTER)
    assert await site.balance(tenant) == GRANT - cost(PROMPT_TOKENS, HOLD_AFTER)
    again = await tenant.oai.responses.cancel(made.id)  # a second cancel changes nothing
    assert again.status == "cancelled"
    assert len(await site.usage(tenant)) == 1
    await site.settled_cleanly()


async def test_background_answer_polled_to_its_end(site: Site) -> None:
    tenant = await site.tenant()
    gate = held(site)
    made = await tenant.oai.responses.create(
        model=MODEL, input="Hi", max_output_tokens=100, background=True, metadata={"t": "1"}
    )
    await asyncio.wait_for(site.backend.held(0), 5)
    assert (await tenant.oai.responses.retrieve(made.id)).status == "in_progress"
    gate.set()
    done = await final(tenant, made.id)
    assert done.status == "completed" and done.output_text == "x" * 50
    assert done.usage is not None and done.usage.output_tokens == 50
    assert done.metadata == {"t": "1"}
    assert await site.balance(tenant) == GRANT - cost(PROMPT_TOKENS, 50)
    plain = await tenant.oai.responses.create(model=MODEL, input="Hi", max_output_tokens=100)
    with pytest.raises(openai.BadRequestError) as refused:  # not a background response
        await tenant.oai.responses.cancel(plain.id)
    assert refused.value.status_code == 400
    await site.settled_cleanly()


async def test_stored_retrieve_delete_and_store_false(site: Site) -> None:
    tenant = await site.tenant()
    made = await tenant.oai.responses.create(
        model=MODEL, input="Hi", max_output_tokens=4, metadata={"ticket": "T-1"}
    )
    got = await tenant.oai.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text == "Hello, world"
    assert got.metadata == {"ticket": "T-1"} and got.usage == made.usage
    items = await tenant.oai.responses.input_items.list(made.id)
    assert [i.type for i in items.data] == ["message"]
    await tenant.oai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        await tenant.oai.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await tenant.oai.responses.delete(made.id)
    unstored = await tenant.oai.responses.create(
        model=MODEL, input="Hi", max_output_tokens=4, store=False
    )
    assert unstored.output_text == "Hello, world"
    with pytest.raises(openai.NotFoundError):
        await tenant.oai.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError):  # not stored: nothing to continue from
        await tenant.oai.responses.create(
            model=MODEL, input="More", previous_response_id=unstored.id, max_output_tokens=4
        )


async def test_another_accounts_ids_are_not_found(site: Site) -> None:
    mine, other = await site.tenant(), await site.tenant()
    held(site)
    made = await mine.oai.responses.create(
        model=MODEL, input="Hi", max_output_tokens=100, background=True
    )
    await asyncio.wait_for(site.backend.held(0), 5)
    attempts = [
        other.oai.responses.retrieve(made.id),
        other.oai.responses.delete(made.id),
        other.oai.responses.cancel(made.id),
        other.oai.responses.input_items.list(made.id),
        other.oai.responses.create(
            model=MODEL, input="Hi", previous_response_id=made.id, max_output_tokens=2
        ),
        other.oai.responses.retrieve("resp_" + "0" * 48),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError) as refused:
            await attempt
        assert refused.value.status_code == 404
        # Exactly what an id that never existed gets: nothing tells it apart.
        assert "resp_" in refused.value.message or "not found" in refused.value.message.lower()
    assert (await mine.oai.responses.retrieve(made.id)).status == "in_progress"
    assert (await mine.oai.responses.cancel(made.id)).status == "cancelled"  # still mine
    assert (await final(mine, made.id)).status == "cancelled"
    assert await site.balance(other) == GRANT  # the other account paid nothing
    await site.settled_cleanly()

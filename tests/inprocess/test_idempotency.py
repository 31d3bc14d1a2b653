"""`Idempotency-Key`, in-process (ported from tests/e2e/test_billing.py's idempotency tests): a
retry with the same key and body gets the first answer's bytes (`idempotent-replayed: true`)
and is billed once; the same key with another body is a 400; a retry while the first still
runs is a 409 (the first held running by the fake backend); a stream cannot be replayed (409).

Issue 19 asks for the key on every POST that runs a model or stores something: chat,
completions, embeddings, Responses (background included) and Messages."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson
import pytest

from tests.inprocess.conftest import GRANT
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tests.inprocess.site import EMBED, MODEL, Site, error_of

MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
CHARGE = PROMPT_TOKENS + 2 * 3  # the fake model's whole answer: 13 µc

# (route, body, micro-credits one answer costs)
ROUTES: list[tuple[str, dict[str, Any], int]] = [
    (CHAT, {"model": MODEL, "messages": MSGS, "max_tokens": 5}, CHARGE),
    ("/v1/completions", {"model": MODEL, "prompt": "hi", "max_tokens": 5}, CHARGE),
    ("/v1/embeddings", {"model": EMBED, "input": ["a", "b"]}, 2 * PROMPT_TOKENS),
    ("/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 5}, CHARGE),
    ("/v1/messages", {"model": MODEL, "messages": MSGS, "max_tokens": 5}, CHARGE),
]


def key() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(8)}


@pytest.mark.parametrize(("route", "body", "charge"), ROUTES, ids=[r[0] for r in ROUTES])
async def test_a_retry_gets_the_first_answers_bytes_billed_once(
    site: Site, route: str, body: dict[str, Any], charge: int
) -> None:
    tenant = await site.tenant()
    headers = key()
    first = await site.post(route, body, tenant, **headers)
    again = await site.post(route, body, tenant, **headers)
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    assert await site.balance(tenant) == GRANT - charge
    assert len(await site.usage(tenant)) == 1
    await site.settled_cleanly()
    fresh = await site.post(route, body, tenant, **key())  # another key: another answer
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert await site.balance(tenant) == GRANT - 2 * charge


async def test_the_same_key_with_another_body_is_a_400(site: Site) -> None:
    tenant = await site.tenant()
    headers = key()
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 6}
    assert (await site.post(CHAT, body, tenant, **headers)).status_code == 200
    changed = await site.post(CHAT, {**body, "max_tokens": 7}, tenant, **headers)
    assert changed.status_code == 400
    assert error_of(changed)["code"] == "idempotency_key_reused"
    assert await site.balance(tenant) == GRANT - CHARGE


async def test_a_retry_while_the_first_runs_is_a_409(site: Site) -> None:
    tenant = await site.tenant()
    gate = asyncio.Event()
    site.backend.script = Script(hold=gate, hold_after=1)
    headers = key()
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 5}
    first = asyncio.create_task(site.post(CHAT, body, tenant, **headers))
    await asyncio.wait_for(site.backend.held(0), 5)
    second = await site.post(CHAT, body, tenant, **headers)
    assert second.status_code == 409
    assert error_of(second)["code"] is not None
    gate.set()
    assert (await first).status_code == 200
    third = await site.post(CHAT, body, tenant, **headers)
    assert third.headers.get("idempotent-replayed") == "true"
    assert third.content == (await first).content
    assert len(site.backend.runs) == 1
    assert await site.balance(tenant) == GRANT - CHARGE
    await site.settled_cleanly()


async def test_a_stream_is_not_replayed(site: Site) -> None:
    tenant = await site.tenant()
    headers = key()
    body = {"model": MODEL, "messages": MSGS, "max_tokens": 2, "stream": True}
    assert (await site.post(CHAT, body, tenant, **headers)).status_code == 200
    again = await site.post(CHAT, body, tenant, **headers)
    assert again.status_code == 409
    assert error_of(again)["code"] == "idempotent_stream_completed"
    assert len(site.backend.runs) == 1 and len(await site.usage(tenant)) == 1


async def test_a_background_response_is_created_once(site: Site) -> None:
    tenant = await site.tenant()
    headers = key()
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 5, "background": True}
    first = await site.post("/v1/responses", body, tenant, **headers)
    again = await site.post("/v1/responses", body, tenant, **headers)
    assert first.status_code == again.status_code == 200, first.text
    assert orjson.loads(again.content)["id"] == orjson.loads(first.content)["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert len(site.backend.runs) == 1


async def test_the_same_key_and_body_on_another_route_is_not_a_replay(site: Site) -> None:
    """A key names one request: route and body. The same body sent with the same key to
    /v1/responses/compact after /v1/responses is refused, never answered with the response
    (schemathesis found the compaction route replaying a response object)."""
    tenant = await site.tenant()
    headers = key()
    body = {"model": MODEL, "input": "hi", "max_output_tokens": 5}
    first = await site.post("/v1/responses", body, tenant, **headers)
    assert first.status_code == 200, first.text
    other = await site.post("/v1/responses/compact", body, tenant, **headers)
    assert other.status_code == 400
    assert error_of(other)["code"] == "idempotency_key_reused"
    assert "idempotent-replayed" not in other.headers

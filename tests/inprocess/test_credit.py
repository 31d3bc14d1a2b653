"""402 and the ledger's arithmetic, in-process (ported from tests/e2e/test_billing.py,
test_responses_billing.py and test_anthropic_sdk.py's 402s): a request is admitted only when
the balance covers its worst case — its prompt plus max_tokens at the model's prices — held
atomically; settlement captures what was produced and releases the rest. Every number below is
read back from the ledger (balance, each hold's amount and capture) and the usage rows.

The fake model: 7 prompt tokens (1 µc each), its three pieces "Hello", ",", " world" (2 µc
each). A request with max_tokens m holds 7 + 2m µc and is charged 7 + 2 × 3 = 13 µc."""

from __future__ import annotations

import asyncio
import re

import anthropic
import openai
import pytest

from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tests.inprocess.site import MODEL, HoldRow, Site, Tenant, anthropic_error_of, cost, error_of

MESSAGES = [{"role": "user", "content": "hi"}]
CHARGE = cost(PROMPT_TOKENS, 3)  # a whole answer of the fake model: 13 µc


def hold_for(max_tokens: int) -> int:
    return cost(PROMPT_TOKENS, max_tokens)


def chat(max_tokens: int, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, **extra}


async def refused_untouched(site: Site, tenant: Tenant, grant: int) -> None:
    """A 402 held nothing, charged nothing, recorded nothing."""
    assert await site.balance(tenant) == grant
    assert await site.holds(tenant) == []
    assert await site.usage(tenant) == []
    await site.settled_cleanly()


async def test_no_credit_is_a_402_envelope_naming_max_tokens(site: Site) -> None:
    broke = await site.tenant(grant=0)
    resp = await site.post("/v1/chat/completions", chat(50), broke)
    assert resp.status_code == 402
    assert re.fullmatch(r"req_[0-9a-f]{32}", resp.headers["x-request-id"])
    assert "retry-after" not in resp.headers  # more time does not help: more credit does
    error = error_of(resp)
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "insufficient_credit_balance"
    assert "max_tokens" in error["message"] and "0.000107" in error["message"]  # 7 + 2 × 50
    assert site.backend.runs == []  # never reached the model
    await refused_untouched(site, broke, 0)


async def test_the_sdk_sees_the_402_on_every_openai_style_route(site: Site) -> None:
    broke = await site.tenant(grant=0)
    attempts = [
        broke.oai.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5),  # type: ignore[arg-type]
        broke.oai.completions.create(model=MODEL, prompt="hi", max_tokens=5),
        broke.oai.responses.create(model=MODEL, input="hi", max_output_tokens=5),
        broke.oai.responses.create(model=MODEL, input="hi", max_output_tokens=5, stream=True),
        broke.oai.responses.create(model=MODEL, input="hi", max_output_tokens=5, background=True),
    ]
    for attempt in attempts:
        with pytest.raises(openai.APIStatusError) as refused:
            await attempt
        assert refused.value.status_code == 402
        assert refused.value.code == "insufficient_credit_balance"
        assert refused.value.response.headers["x-request-id"].startswith("req_")
    await refused_untouched(site, broke, 0)


async def test_the_messages_api_answers_402_in_anthropics_envelope(site: Site) -> None:
    broke = await site.tenant(grant=0)
    with pytest.raises(anthropic.PaymentRequiredError) as refused:
        await broke.claude.messages.create(model=MODEL, max_tokens=50, messages=MESSAGES)  # type: ignore[arg-type]
    error = anthropic_error_of(refused.value.response)
    assert error["type"] == "billing_error" and "max_tokens" in error["message"]
    assert refused.value.response.headers["x-request-id"].startswith("req_")
    await refused_untouched(site, broke, 0)


async def test_admitted_exactly_when_the_balance_covers_the_worst_case(site: Site) -> None:
    grant = hold_for(10)  # 27 µc: max_tokens 10 fits exactly, 11 does not
    tenant = await site.tenant(grant=grant)
    over = await site.post("/v1/chat/completions", chat(11), tenant)
    assert over.status_code == 402
    await refused_untouched(site, tenant, grant)

    exact = await site.post("/v1/chat/completions", chat(10), tenant)
    assert exact.status_code == 200, exact.text
    assert exact.headers["x-tokendock-cost"] == "0.000013"
    assert exact.headers["x-tokendock-credit-remaining"] == "0.000014"
    assert await site.balance(tenant) == grant - CHARGE == 14
    # The whole worst case was held; the answer's cost captured, the rest released.
    assert await site.holds(tenant) == [HoldRow(hold_for(10), CHARGE, "settled")]

    again = await site.post("/v1/chat/completions", chat(10), tenant)
    assert again.status_code == 402  # 27 µc needed, 14 left
    assert "0.000014" in error_of(again)["message"]
    small = await site.post("/v1/chat/completions", chat(3), tenant)  # holds 13 of 14
    assert small.status_code == 200
    assert await site.balance(tenant) == 14 - CHARGE == 1
    (first, second) = await site.usage(tenant)
    assert (first["prompt_tokens"], first["completion_tokens"], first["cost"]) == (7, 3, CHARGE)
    assert second["cost"] == CHARGE and second["status"] == "ok"
    await site.settled_cleanly()


async def test_a_running_requests_hold_is_not_spendable_twice(site: Site) -> None:
    """While one request runs (held running by the test), its hold is taken from what a second
    one may hold: one hold of 27 µc fits a 40 µc balance, a second does not, until the first
    settled (13 charged, 14 released) — then it fits."""
    gate = asyncio.Event()
    site.backend.script = Script(hold=gate, hold_after=1)
    grant = 2 * hold_for(10) - 14  # 40 µc
    tenant = await site.tenant(grant=grant)
    first = asyncio.create_task(site.post("/v1/chat/completions", chat(10), tenant))
    await asyncio.wait_for(site.backend.held(0), 5)
    assert await site.holds(tenant) == [HoldRow(hold_for(10), None, "open")]
    assert await site.balance(tenant) == grant - hold_for(10)  # 13: the hold is taken off

    second = await site.post("/v1/chat/completions", chat(10), tenant)
    assert second.status_code == 402
    assert "0.000013" in error_of(second)["message"]  # what is left while the hold is open

    gate.set()
    assert (await first).status_code == 200
    assert await site.balance(tenant) == grant - CHARGE  # 27: the rest of the hold came back
    third = await site.post("/v1/chat/completions", chat(10), tenant)
    assert third.status_code == 200
    assert await site.balance(tenant) == grant - 2 * CHARGE
    assert [h.captured for h in await site.holds(tenant)] == [CHARGE, CHARGE]
    await site.settled_cleanly()


async def test_a_keys_spend_limit_is_a_402_of_its_own(site: Site) -> None:
    tenant = await site.tenant(spend_limit=hold_for(10) + CHARGE)  # 40 µc over the key's life
    assert (await site.post("/v1/chat/completions", chat(10), tenant)).status_code == 200
    over = await site.post("/v1/chat/completions", chat(10), tenant)  # 13 spent + 27 held = 40
    assert over.status_code == 200
    refused = await site.post("/v1/chat/completions", chat(10), tenant)  # 26 spent + 27 > 40
    assert refused.status_code == 402
    error = error_of(refused)
    assert error["code"] == "key_spend_limit_reached" and "max_tokens" in error["message"]
    assert await site.balance(tenant) == 1_000_000 - 2 * CHARGE
    await site.settled_cleanly()


async def test_a_402_still_carries_the_rate_limit_headers(site: Site) -> None:
    broke = await site.tenant(grant=0)
    await site.limit(broke, rpm=10)
    resp = await site.post("/v1/chat/completions", chat(5), broke)
    assert resp.status_code == 402
    assert resp.headers["x-ratelimit-limit-requests"] == "10"
    assert "retry-after" not in resp.headers


async def test_embeddings_hold_and_charge_the_input_price(site: Site) -> None:
    tenant = await site.tenant(grant=3 * PROMPT_TOKENS)  # three inputs' worth: 21 µc
    refused = await site.post(
        "/v1/embeddings", {"model": "fake-embed", "input": ["a", "b", "c", "d"]}, tenant
    )
    assert refused.status_code == 402
    await refused_untouched(site, tenant, 3 * PROMPT_TOKENS)
    reply = await tenant.oai.embeddings.create(model="fake-embed", input=["a", "b", "c"])
    assert [d.index for d in reply.data] == [0, 1, 2]
    assert reply.usage.prompt_tokens == 3 * PROMPT_TOKENS
    assert await site.balance(tenant) == 0
    assert await site.holds(tenant) == [HoldRow(21, 21, "settled")]
    await site.settled_cleanly()

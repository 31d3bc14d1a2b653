"""429s and the rate-limit headers, in-process (ported from tests/e2e/test_limits.py and the
429s of test_responses_billing.py / test_anthropic_sdk.py): requests per minute (exact under
a concurrent burst), tokens per minute (prompt + max_tokens reserved at admission, the unused
part returned at settlement), concurrent requests — set on a key as `tokendock limits set --key`
sets them. Requests that must still be running are held running by the fake backend."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tests.inprocess.site import MODEL, Site, Tenant, anthropic_error_of, error_of

MESSAGES = [{"role": "user", "content": "hi"}]
RESET = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")
CHAT = "/v1/chat/completions"


def chat(max_tokens: int = 3, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, **extra}


def check_429(resp: httpx.Response, kind: str) -> dict[str, Any]:
    """OpenAI's 429: type "requests" or "tokens", when to retry, the request's id."""
    assert resp.status_code == 429, resp.text
    error = error_of(resp)
    assert error["type"] == kind and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert int(resp.headers["retry-after-ms"]) > 0
    assert resp.headers["x-request-id"].startswith("req_")
    return error


async def limited(site: Site, **limits: int) -> Tenant:
    tenant = await site.tenant()
    await site.limit(tenant, **limits)
    return tenant


async def test_headers_on_every_completion(site: Site) -> None:
    tenant = await limited(site, rpm=100, tpm=10_000)
    raw = await tenant.oai.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=3,
    )
    h = raw.headers
    assert h["x-ratelimit-limit-requests"] == "100"
    assert h["x-ratelimit-remaining-requests"] == "99"
    assert h["x-ratelimit-limit-tokens"] == "10000"
    assert h["x-ratelimit-remaining-tokens"] == str(10_000 - PROMPT_TOKENS - 3)  # reserved
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        assert RESET.match(h[name]), h[name]


async def test_requests_per_minute_is_exact_under_a_burst(site: Site) -> None:
    tenant = await limited(site, rpm=10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    replies = await asyncio.gather(*(site.post(CHAT, chat(1), tenant) for _ in range(40)))
    span = loop.time() - started  # GCRA refills one request every 6 s at 10 a minute
    ok = [r for r in replies if r.status_code == 200]
    assert 10 <= len(ok) <= 10 + int(span / 6), (len(ok), span)
    for refused in (r for r in replies if r.status_code != 200):
        error = check_429(refused, "requests")
        assert "10 requests per minute" in error["message"]
        assert refused.headers["x-ratelimit-limit-requests"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(site.backend.runs) == len(ok)  # a refused request never reached the model
    assert len(await site.usage(tenant)) == len(ok)
    await site.settled_cleanly()


async def test_tokens_reserved_at_admission_and_returned_at_settlement(site: Site) -> None:
    tenant = await limited(site, tpm=300)
    too_big = await site.post(CHAT, chat(400), tenant)
    assert too_big.status_code == 429
    assert error_of(too_big)["type"] == "tokens"
    assert too_big.headers["x-should-retry"] == "false"  # it can never fit a minute

    gate = asyncio.Event()
    site.backend.script = Script(hold=gate, hold_after=1)
    first = asyncio.create_task(site.post(CHAT, chat(200, stream=True), tenant))
    await asyncio.wait_for(site.backend.held(0), 5)
    second = await site.post(CHAT, chat(200), tenant)  # 207 reserved of 300: 200 more cannot
    check_429(second, "tokens")
    assert second.headers["x-ratelimit-remaining-tokens"] == str(300 - PROMPT_TOKENS - 200)
    gate.set()
    done = await first
    assert done.status_code == 200
    assert done.headers["x-ratelimit-remaining-tokens"] == str(300 - PROMPT_TOKENS - 200)
    # Settled at what it used (7 + 3): 290 left, so 150 fits now.
    third = await site.post(CHAT, chat(150), tenant)
    assert third.status_code == 200, third.text
    left = 300 - (PROMPT_TOKENS + 3) - (PROMPT_TOKENS + 150)
    assert third.headers["x-ratelimit-remaining-tokens"] == str(left)


async def test_concurrent_requests_limit(site: Site) -> None:
    tenant = await limited(site, concurrent=2)
    gate = asyncio.Event()
    site.backend.script = Script(hold=gate, hold_after=1)
    running = [asyncio.create_task(site.post(CHAT, chat(stream=True), tenant)) for _ in range(2)]
    await asyncio.wait_for(site.backend.held(1), 5)
    await site.backend.held(0)
    third = await site.post(CHAT, chat(2), tenant)
    error = check_429(third, "requests")
    assert "2 concurrent requests" in error["message"]
    count = await site.post(
        "/v1/messages/count_tokens", {"model": MODEL, "messages": MESSAGES}, tenant
    )
    assert count.status_code == 429  # counting takes a slot like any request
    gate.set()
    assert [r.status_code for r in await asyncio.gather(*running)] == [200, 200]
    after = await site.post(CHAT, chat(2), tenant)
    assert after.status_code == 200  # the slots were given back as they settled
    await site.settled_cleanly()


async def test_the_messages_api_answers_429_in_anthropics_envelope(site: Site) -> None:
    tenant = await limited(site, rpm=1)
    await tenant.claude.messages.create(model=MODEL, max_tokens=1, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as refused:
        await tenant.claude.messages.create(model=MODEL, max_tokens=1, messages=MESSAGES)  # type: ignore[arg-type]
    error = anthropic_error_of(refused.value.response)
    assert error["type"] == "rate_limit_error" and "1 requests per minute" in error["message"]
    headers = refused.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-limit-requests"] == "1"


async def test_responses_429_with_retry_after(site: Site) -> None:
    tenant = await limited(site, rpm=1)
    await tenant.oai.responses.create(model=MODEL, input="Hi", max_output_tokens=2)
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as refused:
            await tenant.oai.responses.create(
                model=MODEL, input="Hi", max_output_tokens=2, stream=stream
            )
        headers = refused.value.response.headers
        assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-limit-requests"] == "1"
        body = refused.value.body
        assert isinstance(body, dict) and body["type"] == "requests"


async def test_the_sdks_own_retry_gets_through_a_short_429(site: Site) -> None:
    """One concurrent request: a second is refused while the first runs; the openai SDK, told
    how long to wait (retry-after-ms), retries and gets through once the first is done."""
    tenant = await limited(site, concurrent=1)
    gate = asyncio.Event()
    site.backend.script = Script(hold=gate, hold_after=1)
    first = asyncio.create_task(site.post(CHAT, chat(), tenant))
    await asyncio.wait_for(site.backend.held(0), 5)
    refused = asyncio.Event()

    async def seen(response: httpx.Response) -> None:
        if response.status_code == 429:
            refused.set()

    transport = httpx.ASGITransport(app=site.app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://tokendock", event_hooks={"response": [seen]}
    ) as http:
        patient = openai.AsyncOpenAI(
            api_key=tenant.key, base_url="http://tokendock/v1", http_client=http, max_retries=3
        )
        second = asyncio.create_task(
            patient.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=2,
            )
        )
        await asyncio.wait_for(refused.wait(), 5)  # its first try met the busy slot
        gate.set()
        assert (await first).status_code == 200
        raw = await asyncio.wait_for(second, 30)
    assert raw.retries_taken >= 1
    assert raw.parse().choices[0].message.content == "Hello, world"

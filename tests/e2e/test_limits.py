"""Rate limits through the real server: exact admission, headers, 429s the SDK recovers from,
token reservation and refund, concurrency slots, two processes sharing Redis, Redis down."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import ROOT, Server, start_server

REDIS_URL = os.environ.get("TOKENDOCK_TEST_REDIS_URL")
MESSAGES = [{"role": "user", "content": "Say something."}]
RESET = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("limits"))
    yield srv
    srv.stop()


def key_with_limits(server: Server, **limits: int) -> str:
    """A fresh account and key; the limits are set before the key is ever used."""
    email = f"rl-{secrets.token_hex(4)}@example.com"
    key = server.new_key(email, "5")
    key_id = re.search(r"^(\d+)\t", server.cli("keys", "list", email), re.M)
    assert key_id
    flags = [f"--{name}={value}" for name, value in limits.items()]
    server.cli("limits", "set", "--key", key_id.group(1), *flags)
    return key


async def storm(base: list[str], key: str, n: int) -> tuple[list[httpx.Response], float]:
    """n simultaneous requests; also how long admission could have been refilling: from the
    first to the last refusal (GCRA refills one request per 60/RPM seconds, continuously)."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 1, "temperature": 0}
    refusals: list[float] = []

    async def one(http: httpx.AsyncClient, url: str) -> httpx.Response:
        resp = await http.post(url, json=body)
        if resp.status_code == 429:
            refusals.append(time.monotonic())
        return resp

    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {key}"},
        timeout=300,
        limits=httpx.Limits(max_connections=n),
    ) as http:
        responses = await asyncio.gather(
            *(one(http, base[i % len(base)] + "/chat/completions") for i in range(n))
        )
    return list(responses), (max(refusals) - min(refusals)) if refusals else 0.0


def admitted_within_limit(codes: list[int], rpm: int, span: float) -> None:
    """Exactly the burst, plus at most what continuous refill allows during the storm."""
    ok = codes.count(200)
    assert rpm <= ok <= rpm + int(span * rpm / 60), (ok, span)
    assert codes.count(429) == len(codes) - ok


def check_429(resp: httpx.Response, kind: str) -> None:
    assert resp.status_code == 429
    error = resp.json()["error"]
    assert error["type"] == kind and error["code"] == "rate_limit_exceeded"
    assert "per minute" in error["message"] or "concurrent" in error["message"]
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert int(resp.headers["retry-after-ms"]) > 0
    assert resp.headers["x-request-id"].startswith("req_")


def test_rpm_is_exact_under_500_concurrent(limited: Server) -> None:
    key = key_with_limits(limited, rpm=60)
    responses, span = asyncio.run(storm([limited.v1], key, 500))
    admitted_within_limit([r.status_code for r in responses], 60, span)
    for r in responses:
        if r.status_code == 429:
            check_429(r, "requests")
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "60"
    assert 0 <= int(ok.headers["x-ratelimit-remaining-requests"]) < 60
    assert RESET.match(ok.headers["x-ratelimit-reset-requests"])


def test_workers_without_redis_are_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tokendock", "serve", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "TOKENDOCK_RATE_LIMIT_BACKEND": "memory"},
    )
    assert out.returncode == 2
    assert "TOKENDOCK_RATE_LIMIT_BACKEND=redis" in out.stderr


# -- Redis -------------------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(not REDIS_URL, reason="TOKENDOCK_TEST_REDIS_URL is not set")


@needs_redis
def test_two_processes_share_one_limit(tmp_path: Path) -> None:
    assert REDIS_URL
    env = {
        "TOKENDOCK_RATE_LIMIT_BACKEND": "redis",
        "TOKENDOCK_REDIS_URL": REDIS_URL,
        "TOKENDOCK_REDIS_PREFIX": f"td:test:{secrets.token_hex(4)}:",
        "TOKENDOCK_RATE_TIERS": json.dumps({"default": {"rpm": 60}}),
    }
    first = start_server(tmp_path, env=env)
    second = start_server(tmp_path, env=env, database_url=first.database_url)
    try:
        key = first.new_key(f"two-{secrets.token_hex(3)}@example.com", "5")
        responses, span = asyncio.run(storm([first.v1, second.v1], key, 500))
        # One budget across both processes: never the 120 that two local limiters would allow.
        admitted_within_limit([r.status_code for r in responses], 60, span)
    finally:
        first.stop()
        second.stop()


def _redis_down_server(tmp_path: Path, fail_open: bool) -> Server:
    env = {
        "TOKENDOCK_RATE_LIMIT_BACKEND": "redis",
        "TOKENDOCK_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens there
        "TOKENDOCK_RATE_LIMIT_FAIL_OPEN": "true" if fail_open else "false",
        "TOKENDOCK_RATE_TIERS": json.dumps({"default": {"rpm": 1000}}),
    }
    return start_server(tmp_path, env=env)


def test_redis_down_fails_closed(tmp_path: Path) -> None:
    srv = _redis_down_server(tmp_path, fail_open=False)
    try:
        resp = httpx.post(
            srv.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {srv.key}"},
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1},
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "rate_limiter_unavailable"
        assert resp.headers["x-request-id"].startswith("req_")
    finally:
        srv.stop()


def test_redis_down_can_fail_open(tmp_path: Path) -> None:
    srv = _redis_down_server(tmp_path, fail_open=True)
    try:
        resp = httpx.post(
            srv.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {srv.key}"},
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 1},
            timeout=60,
        )
        assert resp.status_code == 200
        assert "ADMITTING WITHOUT LIMITS" in srv.log()
    finally:
        srv.stop()


def test_counting_input_tokens_spends_the_keys_request_rate(limited: Server) -> None:
    """count_tokens and input_tokens generate nothing and are not billed, but tokenizing is
    work: each spends one request of the key's RPM, and past it the endpoint's own 429
    (Anthropic's envelope on /v1/messages…) with retry-after."""
    key = key_with_limits(limited, rpm=3)
    ask = [{"role": "user", "content": "Count my tokens."}]
    claude = anthropic.Anthropic(base_url=limited.base_url, api_key=key, max_retries=0)
    gpt = openai.OpenAI(base_url=limited.v1, api_key=key, max_retries=0)
    assert claude.messages.count_tokens(model=MODEL, messages=ask).input_tokens > 0  # type: ignore[arg-type]
    assert gpt.responses.input_tokens.count(model=MODEL, input="Count my tokens.").input_tokens > 0
    assert claude.messages.count_tokens(model=MODEL, messages=ask).input_tokens > 0  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.count_tokens(model=MODEL, messages=ask)  # type: ignore[arg-type]
    body = refused.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error", body
    assert "3 requests per minute" in body["error"]["message"]
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
    with pytest.raises(openai.RateLimitError) as also:
        gpt.responses.input_tokens.count(model=MODEL, input="Count my tokens.")
    error = also.value.response.json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded", error
    assert 1 <= int(also.value.response.headers["retry-after"]) <= 60


def test_counting_reserves_tokens_per_minute(limited: Server) -> None:
    """A count reserves its worst case (the prompt's bytes) against TPM, like a generation's
    prompt: one that can never fit is a 429 that says not to retry; a small one is counted."""
    key = key_with_limits(limited, tpm=300)
    claude = anthropic.Anthropic(base_url=limited.base_url, api_key=key, max_retries=0)
    gpt = openai.OpenAI(base_url=limited.v1, api_key=key, max_retries=0)
    small = [{"role": "user", "content": "Count my tokens."}]
    assert claude.messages.count_tokens(model=MODEL, messages=small).input_tokens > 0  # type: ignore[arg-type]
    big = "word " * 200  # 1,000 bytes: more than the whole minute's 300 tokens
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": big}])
    assert "300 tokens per minute" in refused.value.response.json()["error"]["message"]
    assert refused.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.RateLimitError) as also:
        gpt.responses.input_tokens.count(model=MODEL, input=big)
    error = also.value.response.json()["error"]
    assert error["type"] == "tokens" and error["code"] == "rate_limit_exceeded", error


def test_counting_takes_a_concurrency_slot(limited: Server) -> None:
    """While the account's one concurrent request streams, a count is refused (429); once the
    stream is over, counting works again."""
    key = key_with_limits(limited, concurrent=1)
    headers = {"Authorization": f"Bearer {key}"}
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "Count my tokens."}]}
    # Gemma's <eos> and <end_of_turn> banned: the stream runs to max_tokens, still under way
    # when the count is sent.
    body = {**ask, "max_tokens": 400, "stream": True, "logit_bias": {"1": -100, "106": -100}}
    with httpx.stream(
        "POST", limited.v1 + "/chat/completions", json=body, headers=headers, timeout=60
    ) as stream:
        assert stream.status_code == 200
        # Kept referenced: a generator dropped after next() is closed, and closing it closes
        # the connection (the server would see the client leave and end the stream).
        lines = stream.iter_lines()
        next(lines)  # under way
        busy = httpx.post(limited.v1 + "/messages/count_tokens", json=ask, headers=headers)
        assert busy.status_code == 429, busy.text
        assert "1 concurrent requests" in busy.json()["error"]["message"]
        assert busy.headers["retry-after"]
    for _ in range(100):  # the stream's slot is given back as it settles
        counted = httpx.post(limited.v1 + "/messages/count_tokens", json=ask, headers=headers)
        if counted.status_code == 200:
            break
        time.sleep(0.1)
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0

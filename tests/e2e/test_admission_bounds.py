"""Bounded before admission, paid before work (issue 9, findings 1, 3, 4 and 7).

A request is checked against cheap structural bounds, then authenticated, rate-limited and held
for its worst case — all before its prompt is rendered or tokenized. The tokenizer's call counter
(`tokendock_tokenizer_calls_total` on /metrics) proves that refused requests never reach it.
"""

from __future__ import annotations

import asyncio
import secrets
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server

# What runs before admission (the tokenizer counter), not the database.
pytestmark = pytest.mark.any_database

CHAT = "/v1/chat/completions"
END_NOW = {"1": 100, "106": 100}  # Gemma's <eos> and <end_of_turn>: every choice ends at once
TEXT = "/v1/completions"


def tokenizer_calls(server: Server) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tokendock_tokenizer_calls_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def broke(server: Server) -> dict[str, str]:
    """A freshly signed-up account's key: zero credits."""
    email = f"broke-{secrets.token_hex(4)}@example.com"
    return {"Authorization": f"Bearer {server.new_key(email)}"}


def post(server: Server, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.base_url + path, json=body, headers=headers, timeout=60)


def error_of(resp: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["x-request-id"].startswith("req_")
    error: dict[str, Any] = resp.json()["error"]
    assert error["param"] == param, error
    return error


def test_huge_prompt_lists_are_refused_before_any_planning(
    server: Server, broke: dict[str, str]
) -> None:
    before = tokenizer_calls(server)
    body = {"model": MODEL, "prompt": ["a"] * 100_000, "n": 8, "max_tokens": 1}
    error_of(post(server, TEXT, body, broke), 400, "prompt")
    body = {"model": MODEL, "prompt": ["a"] * 100, "n": 8, "max_tokens": 1}
    error_of(post(server, TEXT, body, broke), 400, "n")  # 800 choices
    messages = [{"role": "user", "content": ""}] * 20_000
    error_of(post(server, CHAT, {"model": MODEL, "messages": messages}, broke), 400, "messages")
    assert tokenizer_calls(server) == before
    assert httpx.get(server.base_url + "/health", timeout=5).status_code == 200


def test_zero_credit_is_refused_before_the_tokenizer(server: Server, broke: dict[str, str]) -> None:
    before = tokenizer_calls(server)
    # ~350 KB: under what could still fit the window (2 x 4,096 tokens x 48 bytes, the longest
    # token), so it reaches the credit check
    messages = [{"role": "user", "content": "word " * 700}] * 100
    for path, body in [
        (CHAT, {"model": MODEL, "messages": messages, "max_tokens": 1}),
        (CHAT, {"model": MODEL, "messages": messages, "stream": True}),
        (TEXT, {"model": MODEL, "prompt": ["hello there"] * 100, "max_tokens": 1}),
    ]:
        error = error_of(post(server, path, body, broke), 402, None)
        assert error["code"] == "insufficient_credit_balance"
    assert tokenizer_calls(server) == before


def test_a_prompt_certain_to_overflow_the_window_is_never_tokenized(
    server: Server, broke: dict[str, str]
) -> None:
    """1 MB of text cannot fit 4,096 tokens of at most 48 bytes each: a 400 naming the field
    before admission (so before the 402 too) and before the tokenizer — and counting it is
    refused the same way, whatever the key's credit."""
    before = tokenizer_calls(server)
    messages = [{"role": "user", "content": "word " * 2000}] * 100
    error = error_of(
        post(server, CHAT, {"model": MODEL, "messages": messages}, broke), 400, "messages"
    )
    assert error["code"] == "context_length_exceeded"
    body = {"model": MODEL, "prompt": "word " * 200_000, "max_tokens": 1}
    assert (
        error_of(post(server, TEXT, body, broke), 400, "prompt")["code"]
        == "context_length_exceeded"
    )
    count = {"model": MODEL, "messages": messages}
    resp = httpx.post(server.v1 + "/messages/count_tokens", json=count, headers=broke, timeout=30)
    assert resp.status_code == 400, resp.text
    assert "maximum context length is 4096 tokens" in resp.json()["error"]["message"]
    assert tokenizer_calls(server) == before


def test_a_funded_request_is_tokenized_after_admission(
    server: Server, auth: dict[str, str]
) -> None:
    before = tokenizer_calls(server)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    resp = post(server, CHAT, body, auth)
    assert resp.status_code == 200, resp.text
    assert tokenizer_calls(server) > before


def test_output_caps_of_the_model(server: Server, auth: dict[str, str]) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    resp = post(server, CHAT, {"model": MODEL, "messages": msgs, "max_tokens": 513}, auth)
    assert "512" in error_of(resp, 400, "max_tokens")["message"]
    body = {"model": MODEL, "messages": msgs, "max_completion_tokens": 4000}
    error_of(post(server, CHAT, body, auth), 400, "max_completion_tokens")
    # n × max_tokens over the per-request ceiling (4,096 for the default model).
    body = {"model": MODEL, "messages": msgs, "n": 128, "max_tokens": 400}
    error_of(post(server, CHAT, body, auth), 400, "n")
    body = {"model": MODEL, "prompt": ["a", "b", "c"], "n": 4, "max_tokens": 512}
    error_of(post(server, TEXT, body, auth), 400, "n")
    # Without max_tokens a choice may generate 512 tokens at most, and the hold says so:
    # 2 × 512 completion tokens at 0.10 credits per million, plus a few prompt tokens at 0.05
    # (the whole context window of 4,096 tokens would hold 8 times as much).
    body = {"model": MODEL, "messages": msgs, "stream": True, "n": 2, "logit_bias": END_NOW}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, headers=auth) as r:
        assert r.status_code == 200
        hold = Decimal(r.headers["x-tokendock-hold"])
        assert "[DONE]" in "".join(r.iter_text())
    assert Decimal("0.000102") <= hold <= Decimal("0.000110"), hold


def test_user_field_is_bounded_like_its_column(server: Server, auth: dict[str, str]) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    body = {"model": MODEL, "messages": msgs, "max_tokens": 1, "user": "u" * 257}
    error_of(post(server, CHAT, body, auth), 400, "user")
    body["user"] = "ü" * 256  # the bound is in characters, like the column's
    resp = post(server, CHAT, body, auth)
    assert resp.status_code == 200, resp.text
    rid = resp.headers["x-request-id"]
    rows = httpx.get(server.v1 + "/usage", headers=auth, timeout=10).json()["data"]
    row = next(r for r in rows if r["request_id"] == rid)
    assert row["user"] == "ü" * 256
    assert row["completion_tokens"] >= 1


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("stop", ["x" * 257], "stop[0]"),
        ("stop", "x" * 257, "stop"),
        ("logit_bias", {str(i): 1 for i in range(1025)}, "logit_bias"),
        ("model", "m" * 201, "model"),
    ],
)
def test_stored_and_scanned_strings_are_bounded(
    server: Server, auth: dict[str, str], field: str, value: Any, param: str
) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    body[field] = value
    error = error_of(post(server, CHAT, body, auth), 400, param)
    assert error["type"] == "invalid_request_error"


def test_safe_default_rate_tier(tmp_path: Any) -> None:
    """Out of the box a key may run 4 requests at once: the fifth concurrent one is a 429."""
    server = start_server(tmp_path, {"TOKENDOCK_RATE_TIERS": None})
    try:
        auth = {"Authorization": f"Bearer {server.key}"}
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count to twenty."}],
            "max_tokens": 48,
        }

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as c:
                answers = await asyncio.gather(
                    *(c.post(CHAT, json=body, headers=auth) for _ in range(6))
                )
            return [a.status_code for a in answers]

        statuses = asyncio.run(burst())
        assert statuses.count(200) == 4, statuses
        assert statuses.count(429) == 2, statuses
    finally:
        server.stop()

"""Credits through the real server: 401/402/403 via the SDK, races, disconnects, crashes.

Runs on a server whose catalog prices the model high enough that every token shows in the bill
(tests/e2e/priced_models.toml: 2.5 µc per prompt token, 10 µc per completion token).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import BACKENDS, Server, start_server

CATALOG = Path(__file__).with_name("priced_models.toml")
MESSAGES = [{"role": "user", "content": "Tell me about whales."}]


def cost(prompt_tokens: int, completion_tokens: int) -> int:
    """The catalog's prices with the documented rounding: up, once per request."""
    return -(-(prompt_tokens * 2_500_000 + completion_tokens * 10_000_000) // 1_000_000)


@pytest.fixture(scope="module", params=BACKENDS)
def billing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp(f"billing-{request.param}"),
        env={"TOKENDOCK_MODELS_FILE": str(CATALOG), "TOKENDOCK_KEY_CACHE_SECONDS": "1"},
        backend=request.param,
    )
    yield srv
    srv.stop()


def sdk(server: Server, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=retries, timeout=120)


def balance(server: Server, key: str) -> int:
    resp = httpx.get(server.v1 + "/credits", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["balance_micro_credits"])


def usage_rows(server: Server, key: str) -> list[dict[str, Any]]:
    resp = httpx.get(server.v1 + "/usage", headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def verify(server: Server) -> int:
    """`tokendock ledger verify` passes; returns the number of open holds."""
    out = server.cli("ledger", "verify")
    assert "ledger OK" in out, out
    match = re.search(r"open holds: (\d+)", out)
    assert match, out
    return int(match.group(1))


def email() -> str:
    return f"user-{secrets.token_hex(4)}@example.com"


# -- 401 / 402 / 403 -------------------------------------------------------------------------


def test_models_listing_needs_no_key(billing: Server) -> None:
    assert httpx.get(billing.v1 + "/models").status_code == 200


def test_model_outside_allow_list_is_403(billing: Server) -> None:
    key = billing.new_key(email(), "1", "--allow-models", "some-other-model")
    with pytest.raises(openai.PermissionDeniedError) as exc:
        sdk(billing, key).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert exc.value.code == "model_not_allowed"


def test_unpriced_model_is_refused(billing: Server) -> None:
    key = billing.new_key(email(), "1")
    with pytest.raises(openai.InternalServerError) as exc:
        sdk(billing, key).chat.completions.create(
            model="unpriced-gemma",
            messages=MESSAGES,
            max_tokens=2,  # type: ignore[arg-type]
        )
    assert exc.value.status_code == 503
    assert exc.value.code == "model_unpriced"


def test_revocation_takes_effect_within_a_second(billing: Server) -> None:
    address = email()
    key = billing.new_key(address, "1")
    client = sdk(billing, key)
    client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]
    key_id = re.search(r"^(\d+)\t", billing.cli("keys", "list", address), re.M)
    assert key_id
    billing.cli("keys", "revoke", address, key_id.group(1))
    time.sleep(1.1)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)  # type: ignore[arg-type]


# -- cost headers and usage records ----------------------------------------------------------


def test_cost_headers_and_usage_record(billing: Server) -> None:
    key = billing.new_key(email(), "1")
    before = balance(billing, key)
    raw = sdk(billing, key).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=7,
        temperature=0,
        user="alice",  # type: ignore[arg-type]
    )
    resp = raw.parse()
    assert resp.usage is not None
    expected = cost(resp.usage.prompt_tokens, resp.usage.completion_tokens)
    assert raw.headers["x-tokendock-cost"] == f"0.{expected:06d}"
    remaining = raw.headers["x-tokendock-credit-remaining"]
    assert round(float(remaining) * 1_000_000) == before - expected == balance(billing, key)
    [row] = usage_rows(billing, key)
    assert row["request_id"] == raw.headers["x-request-id"]
    assert row["cost_micro_credits"] == expected
    assert row["prompt_tokens"] == resp.usage.prompt_tokens
    assert row["completion_tokens"] == resp.usage.completion_tokens
    assert row["user"] == "alice" and row["status"] == "ok"
    assert row["finish_reason"] == resp.choices[0].finish_reason
    assert row["latency_ms"] >= row["ttft_ms"] >= 0


def test_stream_usage_chunk_carries_cost(billing: Server) -> None:
    key = billing.new_key(email(), "1")
    before = balance(billing, key)
    stream = sdk(billing, key).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None
    expected = cost(usage.prompt_tokens, usage.completion_tokens)
    assert usage.model_extra and usage.model_extra["cost"] == f"0.{expected:06d}"
    assert balance(billing, key) == before - expected


# -- races -------------------------------------------------------------------------------------


async def _storm(server: Server, key: str, n: int, max_tokens: int) -> list[int]:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0}
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(
        base_url=server.v1, headers={"Authorization": f"Bearer {key}"}, timeout=300, limits=limits
    ) as http:
        responses = await asyncio.gather(
            *(http.post("/chat/completions", json=body) for _ in range(n))
        )
    return [r.status_code for r in responses]


def _worst_case(server: Server, key: str, max_tokens: int) -> tuple[int, int]:
    """(the hold, the charge) of one request: the hold bounds the prompt by its UTF-8 bytes
    before tokenizing (a stream's x-tokendock-hold shows it); the charge counts exact tokens."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0}
    auth = {"Authorization": f"Bearer {key}"}
    stream = {**body, "stream": True}
    with httpx.stream("POST", server.v1 + "/chat/completions", json=stream, headers=auth) as r:
        assert r.status_code == 200, r.read()
        hold = round(float(r.headers["x-tokendock-hold"]) * 1_000_000)
        r.read()
    resp = sdk(server, key).chat.completions.create(**body)  # type: ignore[call-overload]
    assert resp.usage is not None
    assert resp.usage.completion_tokens == max_tokens
    charge = cost(resp.usage.prompt_tokens, max_tokens)
    assert hold >= charge
    return hold, charge


def _check_storm(server: Server, key: str, statuses: list[int], hold: int, charge: int) -> None:
    """A storm never admits more than the money covers: at least the holds that fit at once,
    at most the charges that fit (settled requests give their unused hold back meanwhile);
    every admitted request is charged exactly, and the ledger adds up."""
    admitted = statuses.count(200)
    assert 10 <= admitted <= (10 * hold) // charge, statuses
    assert statuses.count(402) == 200 - admitted
    rows = usage_rows(server, key)
    assert len(rows) == admitted
    assert all(row["cost_micro_credits"] == charge for row in rows), rows[:2]
    assert verify(server) == 0


def test_balance_race_admits_exactly_what_it_covers(billing: Server) -> None:
    hold, charge = _worst_case(billing, billing.new_key(email(), "1"), 1)
    key = billing.new_key(email(), f"0.{10 * hold:06d}")
    statuses = asyncio.run(_storm(billing, key, 200, 1))
    _check_storm(billing, key, statuses, hold, charge)
    assert balance(billing, key) == 10 * hold - statuses.count(200) * charge >= 0


def test_spend_limit_race(billing: Server) -> None:
    hold, charge = _worst_case(billing, billing.new_key(email(), "1"), 1)
    key = billing.new_key(email(), "5", "--spend-limit", f"0.{10 * hold:06d}")
    statuses = asyncio.run(_storm(billing, key, 200, 1))
    _check_storm(billing, key, statuses, hold, charge)
    assert balance(billing, key) == 5_000_000 - statuses.count(200) * charge


def test_redemption_code_is_single_use(billing: Server) -> None:
    key = billing.new_key(email(), "0")
    code = billing.cli("codes", "create", "1.5").strip()

    async def storm() -> list[int]:
        async with httpx.AsyncClient(
            base_url=billing.v1, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            responses = await asyncio.gather(
                *(http.post("/credits/redeem", json={"code": code}) for _ in range(50))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(storm())
    assert statuses.count(200) == 1, statuses
    assert statuses.count(400) == 49
    assert balance(billing, key) == 1_500_000
    verify(billing)


# -- disconnects: billed for what the engine produced ------------------------------------------


def _row(server: Server, key: str, user: str) -> dict[str, Any]:
    for _ in range(50):
        rows = [r for r in usage_rows(server, key) if r["user"] == user]
        if rows:
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"no usage row for {user}")


def _blocker(server: Server, key: str) -> asyncio.Task[httpx.Response]:
    """A long request that holds the engine's only slot (priced_models.toml: slots = 1)."""
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 120, "temperature": 0}
    client = httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return asyncio.ensure_future(client.post(server.v1 + "/chat/completions", json=body))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_gone_before_first_token_costs_nothing(billing: Server, stream: bool) -> None:
    key = billing.new_key(email(), "1")
    before = balance(billing, key)
    user = f"queued-{secrets.token_hex(3)}"

    async def scenario() -> int:
        # The blocker is the same account's: the engine is fair between accounts, so only the
        # account's own earlier request keeps this one queued.
        blocker = _blocker(billing, key)
        await asyncio.sleep(0.3)  # the blocker now holds the engine
        body = {
            "model": MODEL,
            "messages": MESSAGES,
            "max_tokens": 50,
            "stream": stream,
            "user": user,
        }
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            if stream:
                async with http.stream("POST", billing.v1 + "/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    async for _ in r.aiter_bytes():
                        break  # the opening chunk only; then the client goes away
            else:
                with contextlib.suppress(httpx.ReadTimeout):
                    await http.post(billing.v1 + "/chat/completions", json=body, timeout=0.5)
        blocked = await blocker
        assert blocked.status_code == 200
        return round(float(blocked.headers["x-tokendock-cost"]) * 1_000_000)

    blocker_cost = asyncio.run(scenario())
    row = _row(billing, key, user)
    assert row["status"] == "client_disconnected"
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_micro_credits"]) == (0, 0, 0)
    assert balance(billing, key) == before - blocker_cost
    assert verify(billing) == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_gone_mid_generation_pays_for_what_was_produced(billing: Server, stream: bool) -> None:
    key = billing.new_key(email(), "1")
    before = balance(billing, key)
    user = f"mid-{secrets.token_hex(3)}"
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 2000,
        "stream": stream,
        "user": user,
        "logit_bias": {"1": -100, "106": -100},  # no end of turn: it runs until the client goes
    }
    received = 0
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as http:
        if stream:
            with http.stream("POST", billing.v1 + "/chat/completions", json=body) as r:
                for line in r.iter_lines():
                    if '"content":"' in line and '"role"' not in line:
                        received += 1
                    if received >= 5:
                        break
        else:
            with contextlib.suppress(httpx.ReadTimeout):
                http.post(billing.v1 + "/chat/completions", json=body, timeout=1.5)
    row = _row(billing, key, user)
    assert row["status"] == "client_disconnected"
    assert row["prompt_tokens"] > 0
    assert max(received, 1) <= row["completion_tokens"] < 2000
    assert row["cost_micro_credits"] == cost(row["prompt_tokens"], row["completion_tokens"])
    assert balance(billing, key) == before - row["cost_micro_credits"]
    assert verify(billing) == 0


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
def test_gone_after_completion_pays_in_full(billing: Server, stream: bool) -> None:
    key = billing.new_key(email(), "1")
    before = balance(billing, key)
    user = f"done-{secrets.token_hex(3)}"
    created = sdk(billing, key).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=6,
        temperature=0,
        stream=stream,
        user=user,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    )
    if stream:
        chunks = list(created)  # type: ignore[arg-type]
        usage = chunks[-1].usage
    else:
        usage = created.usage  # type: ignore[union-attr]
    assert usage is not None
    row = _row(billing, key, user)
    assert row["status"] == "ok"
    assert row["completion_tokens"] == usage.completion_tokens
    assert row["cost_micro_credits"] == cost(usage.prompt_tokens, usage.completion_tokens)
    assert balance(billing, key) == before - row["cost_micro_credits"]


# -- crash ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_with_streams_in_flight(tmp_path: Path, backend: str) -> None:
    env = {"TOKENDOCK_MODELS_FILE": str(CATALOG)}
    srv = start_server(tmp_path, env=env, backend=backend)
    try:
        key = srv.key
        done_users = [f"done-{i}" for i in range(3)]
        for user in done_users:
            sdk(srv, key).chat.completions.create(
                model=MODEL,
                messages=MESSAGES,
                max_tokens=3,
                user=user,  # type: ignore[arg-type]
            )

        async def streams_then_kill() -> None:
            async def one(http: httpx.AsyncClient) -> None:
                body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 500, "stream": True}
                with contextlib.suppress(httpx.HTTPError):
                    async with http.stream("POST", srv.v1 + "/chat/completions", json=body) as r:
                        async for _ in r.aiter_bytes():
                            pass

            async with httpx.AsyncClient(
                headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as http:
                tasks = [asyncio.ensure_future(one(http)) for _ in range(20)]
                await asyncio.sleep(2.0)
                srv.process.kill()  # SIGKILL: no shutdown code runs
                srv.process.wait(10)
                await asyncio.gather(*tasks)

        asyncio.run(streams_then_kill())
        assert verify(srv) > 0  # the dead process left holds open
        restarted = start_server(tmp_path, env=env, database_url=srv.database_url, port=srv.port)
        srv = restarted
        assert verify(srv) == 0  # released at start-up, exactly once
        users = {r["user"] for r in usage_rows(srv, key)}
        assert set(done_users) <= users  # completed requests kept their usage rows
    finally:
        srv.stop()


# -- Idempotency-Key ---------------------------------------------------------------------------

"""Disabling an account or revoking a key ends its running work — a stream (an error event
naming why, then [DONE]), a whole answer (a 401), a call still queued, a background response
(`failed`) — each billed for what the backend produced, exactly once; other accounts' work
runs on. In-process: create_app with a scripted backend whose pieces come slowly."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import orjson

from tests.inprocess.conftest import GRANT, App
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tokendock.web.deps import Services

MODEL = "fake-model"
PIECES = 400  # far more than a test lets the fake produce before the change
SLOW = Script(pieces=("x",) * PIECES, delay=0.01)


def services(app: App) -> Services:
    result: Services = app.app.state.services
    return result


async def balance(app: App, account_id: int) -> int:
    return await services(app).accounts.ledger.balance(account_id)


async def producing(app: App, run_index: int = 0, at_least: int = 5) -> None:
    """Until the backend's run has produced `at_least` pieces (the work is under way)."""
    for _ in range(2000):
        runs = app.backend.runs
        if len(runs) > run_index and runs[run_index].emitted >= at_least:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the run never produced")


def sse(text: str) -> list[Any]:
    lines = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return [line if line == "[DONE]" else orjson.loads(line) for line in lines]


def cost(emitted: int) -> int:
    return PROMPT_TOKENS * 1 + emitted * 2  # the fake model: 1 µc a prompt token, 2 an output


async def stream(app: App, key: str, **extra: Any) -> Any:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {key}"}
    return await app.http.post("/v1/chat/completions", json={**body, **extra}, headers=headers)


async def test_disabling_an_account_ends_its_stream_billed_for_what_it_produced(app: App) -> None:
    app.backend.script = SLOW
    task = asyncio.create_task(stream(app, app.key))
    await producing(app)
    assert await services(app).accounts.set_disabled(app.account_id, True)
    resp = await task
    assert resp.status_code == 200
    events = sse(resp.text)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]
    assert error["code"] == "account_disabled" and "disabled" in error["message"]
    run = app.backend.runs[0]
    assert run.closed and run.emitted < PIECES  # the work stopped, well before its end
    content = [e for e in events[:-2] if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(content) <= run.emitted
    assert await balance(app, app.account_id) == GRANT - cost(run.emitted)
    rows = await services(app).accounts.store.usage(app.account_id, 10)
    assert len(rows) == 1 and rows[0]["completion_tokens"] == run.emitted
    assert services(app).pipeline.running.count(app.account_id) == 0


async def test_revoking_a_key_ends_only_that_keys_work(app: App) -> None:
    accounts = services(app).accounts
    other = await accounts.create_key(app.account_id, "other")
    app.backend.script = SLOW
    revoked = asyncio.create_task(stream(app, app.key))
    kept = asyncio.create_task(stream(app, other.secret, max_tokens=3))
    await producing(app, 0)
    key_id = (await accounts.authenticate(f"Bearer {app.key}")).id
    await accounts.revoke_key(app.account_id, key_id)
    error = sse((await revoked).text)[-2]["error"]
    assert error["code"] == "key_revoked"
    app.backend.script = Script(pieces=("ok",) * 3)
    kept_events = sse((await kept).text)
    assert kept_events[-1] == "[DONE]" and "error" not in kept_events[-2]
    gone = await stream(app, app.key)
    assert gone.status_code == 401  # and the key no longer authenticates


async def test_a_whole_answer_ends_with_a_401_and_is_billed(app: App) -> None:
    app.backend.script = SLOW
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {app.key}"}
    task = asyncio.create_task(app.http.post("/v1/chat/completions", json=body, headers=headers))
    await producing(app)
    await services(app).accounts.set_disabled(app.account_id, True)
    resp = await task
    assert resp.status_code == 401
    assert orjson.loads(resp.content)["error"]["code"] == "account_disabled"
    run = app.backend.runs[0]
    assert run.closed and 0 < run.emitted < PIECES
    assert await balance(app, app.account_id) == GRANT - cost(run.emitted)


async def test_a_call_not_yet_begun_is_released_unbilled(app: App) -> None:
    app.backend.script = Script(begin_delay=30)  # "queued": the backend has done nothing yet
    task = asyncio.create_task(stream(app, app.key))
    for _ in range(1000):
        if app.backend.runs:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)
    await services(app).accounts.set_disabled(app.account_id, True)
    resp = await asyncio.wait_for(task, 10)
    assert resp.status_code == 401
    assert orjson.loads(resp.content)["error"]["code"] == "account_disabled"
    assert await balance(app, app.account_id) == GRANT  # the hold released, nothing charged
    assert await services(app).accounts.store.usage(app.account_id, 10) == []


async def test_a_background_response_ends_failed_and_billed(app: App) -> None:
    app.backend.script = SLOW
    headers = {"Authorization": f"Bearer {app.key}"}
    body = {"model": MODEL, "input": "hi", "background": True, "max_output_tokens": PIECES}
    made = await app.http.post("/v1/responses", json=body, headers=headers)
    assert made.status_code == 200, made.text
    response_id = orjson.loads(made.content)["id"]
    await producing(app)
    await services(app).accounts.set_disabled(app.account_id, True)
    responses = app.app.state.responses
    for _ in range(1000):
        rec = await responses.get(app.account_id, response_id)
        if rec.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.01)
    assert rec.status == "failed"
    assert rec.error is not None and rec.error["code"] == "account_disabled"
    run = app.backend.runs[0]
    assert run.closed and run.emitted < PIECES
    assert rec.usage is not None and rec.usage["output_tokens"] == run.emitted
    assert await balance(app, app.account_id) == GRANT - cost(run.emitted)


async def test_another_accounts_stream_runs_on(app: App) -> None:
    accounts = services(app).accounts
    other = await accounts.create_account(
        f"o-{secrets.token_hex(4)}@example.com", "pw-long-enough", grant=GRANT
    )
    other_key = await accounts.create_key(other, "k")
    app.backend.script = Script(pieces=("x",) * 40, delay=0.01)
    mine = asyncio.create_task(stream(app, app.key))
    theirs = asyncio.create_task(stream(app, other_key.secret))
    await producing(app, 0)
    await accounts.set_disabled(app.account_id, True)
    assert sse((await mine).text)[-2]["error"]["code"] == "account_disabled"
    their_events = sse((await theirs).text)
    assert "error" not in their_events[-2]
    assert sum(1 for e in their_events[:-1] if e["choices"][0]["delta"].get("content")) == 40

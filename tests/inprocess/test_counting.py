"""Counting input tokens (POST /v1/messages/count_tokens, POST /v1/responses/input_tokens) is not
billed but limited like a generation: one request of RPM, the bound's prompt tokens reserved
against TPM and settled to the count, a concurrency slot while it counts — and one access check
with admission: a switched-off model 404, a model outside the key's allow-list 403."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.inprocess.conftest import GRANT, App
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tokendock.services import counting
from tokendock.storage.model_settings import ModelSetting
from tokendock.web.deps import Services

MODEL = "fake-model"
ROUTES = ("/v1/messages/count_tokens", "/v1/responses/input_tokens")


def services(app: App) -> Services:
    result: Services = app.app.state.services
    return result


def body(route: str, model: str = MODEL) -> dict[str, Any]:
    if route.startswith("/v1/messages"):
        return {"model": model, "messages": [{"role": "user", "content": "Count these words."}]}
    return {"model": model, "input": "Count these words."}


async def count(app: App, route: str, key: str | None = None, model: str = MODEL) -> Any:
    headers = {"Authorization": f"Bearer {key or app.key}"}
    return await app.http.post(route, json=body(route, model), headers=headers)


async def limit(app: App, **limits: int) -> None:
    await services(app).accounts.store.set_limits(account_id=app.account_id, **limits)
    services(app).accounts.forget_keys()


def error_of(resp: Any) -> dict[str, Any]:
    error: dict[str, Any] = orjson.loads(resp.content)["error"]
    return error


@pytest.mark.parametrize("route", ROUTES)
async def test_counting_reserves_tpm_and_is_refused_past_it(app: App, route: str) -> None:
    # The fake's bound is PROMPT_TOKENS a request; two fit in 2·PROMPT_TOKENS, a third does not
    # (each count settles to at least what it reserved: "Count these words." counts more).
    await limit(app, tpm=2 * PROMPT_TOKENS)
    for _ in range(2):
        assert (await count(app, route)).status_code == 200
    refused = await count(app, route)
    assert refused.status_code == 429
    assert "tokens per minute" in str(refused.content)
    assert refused.headers["x-ratelimit-limit-tokens"] == str(2 * PROMPT_TOKENS)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert int(refused.headers["retry-after"]) >= 1
    assert await services(app).accounts.ledger.balance(app.account_id) == GRANT  # not billed


@pytest.mark.parametrize("route", ROUTES)
async def test_a_count_holds_a_concurrency_slot(
    app: App, route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await limit(app, concurrent=1)
    release = asyncio.Event()
    real = counting._count

    async def slow(*args: Any) -> int:
        await release.wait()
        return await real(*args)

    monkeypatch.setattr(counting, "_count", slow)
    first = asyncio.create_task(count(app, route))
    await asyncio.sleep(0.05)
    refused = await count(app, route)  # the slot is the first count's
    assert refused.status_code == 429
    assert "1 concurrent requests" in str(refused.content)
    assert refused.headers["retry-after"]
    app.backend.script = Script()
    generation = await app.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {app.key}"},
    )
    assert generation.status_code == 429  # counting and generating share the limit
    release.set()
    assert (await first).status_code == 200
    assert (await count(app, route)).status_code == 200  # the slot was given back


@pytest.mark.parametrize("route", ROUTES)
async def test_a_switched_off_model_is_not_found(app: App, route: str) -> None:
    await services(app).directory.save(MODEL, ModelSetting(enabled=False))
    resp = await count(app, route)
    assert resp.status_code == 404
    assert error_of(resp)["type"] in ("not_found_error", "invalid_request_error")
    assert (await count(app, route, model="no-such-model")).status_code == 404


@pytest.mark.parametrize("route", ROUTES)
async def test_the_keys_allow_list_applies(app: App, route: str) -> None:
    other = await services(app).accounts.create_key(app.account_id, "x", models=["other-model"])
    resp = await count(app, route, key=other.secret)
    assert resp.status_code == 403
    assert "may not use the model" in error_of(resp)["message"]


async def test_counts_spend_requests_like_any_request(app: App) -> None:
    await limit(app, rpm=2)
    assert (await count(app, ROUTES[0])).status_code == 200
    assert (await count(app, ROUTES[1])).status_code == 200
    refused = await count(app, ROUTES[0])
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-requests"] == "2"

"""Anthropic's Message Batches API in-process, driven by the official anthropic SDK
(`client.messages.batches` and `client.beta.messages.batches`): create, poll, results, cancel,
list pagination, another account's batches; every line runs through the one pipeline (the
scripted model), billed at the batch price, usage rows `batch.messages`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from tests.inprocess.fake_backend import FakeBackend, Script
from tests.inprocess.site import MODEL, Tenant, anthropic_error_of, running_site

pytestmark = pytest.mark.asyncio

PATH = "/v1/messages/batches"


def request(custom_id: str, **params: Any) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": custom_id}],
        **params,
    }
    return {"custom_id": custom_id, "params": {k: v for k, v in body.items() if v is not None}}


async def ended(t: Tenant, batch_id: str, seconds: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await t.claude.messages.batches.retrieve(batch_id)
        if got.processing_status == "ended":
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)


async def results(t: Tenant, batch_id: str) -> dict[str, Any]:
    """The results by custom_id, checking they come in request order, one per request."""
    decoder = await t.claude.messages.batches.results(batch_id)
    rows = [row async for row in decoder]
    by_id = {row.custom_id: row.result for row in rows}
    assert len(by_id) == len(rows)
    return by_id


async def test_a_batch_runs_every_request_once_at_the_batch_price(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        before = await site.balance(t)
        requests = [request(f"req-{i}") for i in range(4)]
        requests.append(request("no-max-tokens", max_tokens=None))
        requests.append(request("streamed", stream=True))
        batch = await t.claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert batch.type == "message_batch" and batch.id.startswith("msgbatch_")
        assert batch.processing_status == "in_progress" and batch.results_url is None
        assert batch.ended_at is None and batch.cancel_initiated_at is None
        assert batch.request_counts.processing == 6
        assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
        done = await ended(t, batch.id)
        counts = done.request_counts
        assert (counts.processing, counts.succeeded, counts.errored) == (0, 4, 2)
        assert (counts.canceled, counts.expired) == (0, 0)
        assert done.ended_at is not None and done.ended_at >= done.created_at
        assert done.results_url == f"http://tokendock{PATH}/{batch.id}/results"
        got = await results(t, batch.id)
        assert list(got) == [r["custom_id"] for r in requests]  # request order
        for i in range(4):
            result = got[f"req-{i}"]
            assert result.type == "succeeded"
            message = result.message
            assert message.type == "message" and message.role == "assistant"
            assert message.content[0].text == "Hello, world"
            assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3
        for name, field in (("no-max-tokens", "max_tokens"), ("streamed", "stream")):
            result = got[name]
            assert result.type == "errored"
            assert result.error.type == "error"
            assert result.error.error.type == "invalid_request_error"
            assert field in result.error.error.message, result.error.error.message
        usage = await site.usage(t)
        assert len(usage) == 4
        assert {u["endpoint"] for u in usage} == {"batch.messages"}
        assert all(u["request_id"].startswith(batch.id) for u in usage)
        charged = before - await site.balance(t)
        assert charged == sum(u["cost"] for u in usage) == 4 * 7  # half price: 6.5 → 7 µc
        await site.settled_cleanly()


async def test_beta_namespace_and_raw_jsonl(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        batch = await t.claude.beta.messages.batches.create(
            requests=[request("only")]  # type: ignore[list-item]
        )
        got = await t.claude.beta.messages.batches.retrieve(batch.id)
        assert got.id == batch.id
        await ended(t, batch.id)
        resp = await site.http.get(f"{PATH}/{batch.id}/results", headers={"x-api-key": t.key})
        assert resp.status_code == 200
        lines = [orjson.loads(x) for x in resp.content.splitlines()]
        assert len(lines) == 1 and resp.content.endswith(b"\n")
        assert lines[0]["custom_id"] == "only"
        assert lines[0]["result"]["type"] == "succeeded"
        assert lines[0]["result"]["message"]["model"] == MODEL
        await site.settled_cleanly()


async def test_cancel_ends_pending_requests_canceled(tmp_path: Path) -> None:
    hold = asyncio.Event()
    backend = FakeBackend(script=Script(hold=hold, hold_after=1))
    settings = {"batch_concurrency": 1}
    async with running_site(tmp_path, settings, backend) as site:
        t = await site.tenant()
        requests = [request(f"r{i}") for i in range(3)]
        batch = await t.claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        too_soon = await site.http.get(f"{PATH}/{batch.id}/results", headers=t.auth)
        assert too_soon.status_code == 400
        assert anthropic_error_of(too_soon)["type"] == "invalid_request_error"
        assert "not yet ended" in anthropic_error_of(too_soon)["message"]
        with pytest.raises(anthropic.AnthropicError):
            await t.claude.messages.batches.results(batch.id)
        await site.backend.held(0)  # the first line runs, holding; the others wait
        canceling = await t.claude.messages.batches.cancel(batch.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        hold.set()
        done = await ended(t, batch.id)
        assert done.cancel_initiated_at is not None and done.ended_at is not None
        counts = done.request_counts
        assert (counts.succeeded, counts.canceled, counts.processing) == (1, 2, 0)
        got = await results(t, batch.id)
        assert got["r0"].type == "succeeded"
        assert got["r1"].type == got["r2"].type == "canceled"
        assert len(await site.usage(t)) == 1
        again = await t.claude.messages.batches.cancel(batch.id)  # ended: unchanged
        assert again.processing_status == "ended"
        await site.settled_cleanly()


async def test_bad_requests_name_the_field(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        cases = {
            "bad custom_id": ([request("has space")], "requests.0.custom_id"),
            "duplicate": ([request("a"), request("a")], "Duplicate custom_id 'a'"),
            "no params": ([{"custom_id": "a"}], "requests.0.params"),
            "empty": ([], "requests"),
        }
        for name, (requests, named) in cases.items():
            resp = await site.post(PATH, {"requests": requests}, t)
            assert resp.status_code == 400, name
            error = anthropic_error_of(resp)
            assert error["type"] == "invalid_request_error"
            assert named in error["message"], (name, error)
        extra = await site.post(PATH, {"requests": [request("a")], "nope": 1}, t)
        assert extra.status_code == 400 and "nope" in anthropic_error_of(extra)["message"]
        for limit in ("0", "1001", "x"):
            resp = await site.http.get(PATH, params={"limit": limit}, headers=t.auth)
            assert resp.status_code == 400 and "limit" in anthropic_error_of(resp)["message"]
        unauthenticated = await site.http.get(PATH)
        assert unauthenticated.status_code == 401
        assert anthropic_error_of(unauthenticated)["type"] == "authentication_error"
        assert await site.usage(t) == []


async def test_another_accounts_batch_is_not_found(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t, other = await site.tenant(), await site.tenant()
        batch = await t.claude.messages.batches.create(
            requests=[request("mine")]  # type: ignore[list-item]
        )
        await ended(t, batch.id)
        for path in ("", "/results"):
            resp = await site.http.get(f"{PATH}/{batch.id}{path}", headers=other.auth)
            assert resp.status_code == 404, path
            assert anthropic_error_of(resp)["type"] == "not_found_error"
        with pytest.raises(anthropic.NotFoundError):
            await other.claude.messages.batches.retrieve(batch.id)
        with pytest.raises(anthropic.NotFoundError):
            await other.claude.messages.batches.cancel(batch.id)
        assert [b.id async for b in other.claude.messages.batches.list()] == []
        assert [b.id async for b in t.claude.messages.batches.list()] == [batch.id]
        # An OpenAI batch id is not a message batch, nor the other way round.
        missing = await site.http.get(f"{PATH}/batch_0123", headers=t.auth)
        assert missing.status_code == 404
        openai_side = await site.http.get(f"/v1/batches/{batch.id}", headers=t.auth)
        assert openai_side.status_code == 404
        await site.settled_cleanly()


async def test_list_is_newest_first_and_pages_both_ways(tmp_path: Path) -> None:
    async with running_site(tmp_path, {"batch_runner": False}) as site:
        t = await site.tenant()
        made = []
        for i in range(5):
            batch = await t.claude.messages.batches.create(
                requests=[request(f"b{i}")]  # type: ignore[list-item]
            )
            made.append(batch.id)
        newest_first = made[::-1]
        page = await t.claude.messages.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2] and page.has_more
        assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])
        assert [b.id async for b in await t.claude.messages.batches.list(limit=2)] == newest_first
        older = await t.claude.messages.batches.list(limit=2, after_id=newest_first[1])
        assert [b.id for b in older.data] == newest_first[2:4] and older.has_more
        last = await t.claude.messages.batches.list(limit=2, after_id=newest_first[3])
        assert [b.id for b in last.data] == newest_first[4:] and not last.has_more
        newer = await t.claude.messages.batches.list(limit=2, before_id=newest_first[3])
        assert [b.id for b in newer.data] == newest_first[1:3] and newer.has_more
        top = await t.claude.messages.batches.list(limit=5, before_id=newest_first[1])
        assert [b.id for b in top.data] == newest_first[:1] and not top.has_more
        both = await site.http.get(
            PATH, params={"after_id": made[0], "before_id": made[1]}, headers=t.auth
        )
        assert both.status_code == 400


async def test_window_passes_pending_requests_expire(tmp_path: Path) -> None:
    hold = asyncio.Event()
    backend = FakeBackend(script=Script(hold=hold, hold_after=1))
    settings = {"batch_concurrency": 1, "batch_window_seconds": 1}
    async with running_site(tmp_path, settings, backend) as site:
        t = await site.tenant()
        requests = [request(f"r{i}") for i in range(3)]
        batch = await t.claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert (batch.expires_at - batch.created_at).total_seconds() == 1
        await site.backend.held(0)
        deadline = asyncio.get_running_loop().time() + 10
        while (await t.claude.messages.batches.retrieve(batch.id)).request_counts.expired < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        hold.set()  # the running line still finishes: partial results are kept
        done = await ended(t, batch.id)
        counts = done.request_counts
        assert (counts.succeeded, counts.expired, counts.processing) == (1, 2, 0)
        got = await results(t, batch.id)
        assert [r.type for r in got.values()] == ["succeeded", "expired", "expired"]
        await site.settled_cleanly()


async def test_out_of_credit_is_a_billing_error_and_the_batch_goes_on(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant(grant=5)  # less than one line's hold
        requests = [request(f"r{i}") for i in range(2)]
        batch = await t.claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        done = await ended(t, batch.id)
        assert (done.request_counts.errored, done.request_counts.succeeded) == (2, 0)
        for result in (await results(t, batch.id)).values():
            assert result.type == "errored"
            assert result.error.error.type == "billing_error", result.error
            assert result.error.request_id is not None
            assert result.error.request_id.startswith(batch.id)
        assert await site.usage(t) == [] and await site.balance(t) == 5
        await site.settled_cleanly()

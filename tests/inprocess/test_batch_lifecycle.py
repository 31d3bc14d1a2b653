"""A batch's other ends, in-process: cancelled, expired, out of credit, paced to the key's
concurrency share, its key revoked — and the fence that keeps a line to one result and one
settlement when two claims of it race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import orjson
import pytest
from sqlalchemy import select

from tests.inprocess.conftest import GRANT
from tests.inprocess.fake_backend import FakeBackend, Script
from tests.inprocess.site import MODEL, running_site
from tests.inprocess.test_batches import file_lines, finished, line, upload
from tokendock.billing.records import LineResult
from tokendock.storage.db import create_engine
from tokendock.storage.tables import accounts, batch_lines, usage_records

pytestmark = pytest.mark.asyncio


def held_backend() -> tuple[FakeBackend, asyncio.Event]:
    hold = asyncio.Event()
    return FakeBackend(script=Script(hold=hold, hold_after=1)), hold


async def create(t, lines):  # type: ignore[no-untyped-def]
    return await t.oai.batches.create(
        input_file_id=await upload(t, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )


async def test_cancel_ends_lines_not_started_and_keeps_the_rest(tmp_path: Path) -> None:
    backend, hold = held_backend()
    async with running_site(tmp_path, {"batch_concurrency": 4}, backend=backend) as site:
        t = await site.tenant()
        batch = await create(t, [line(f"r{i}") for i in range(10)])
        for i in range(4):
            await backend.held(i)  # four lines run, six wait
        cancelling = await t.oai.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        await asyncio.sleep(0.3)
        assert len(backend.runs) == 4  # nothing new started after the cancel
        hold.set()
        done = await finished(t, batch.id)
        assert done.status == "cancelled" and done.cancelled_at is not None
        out, errors = (
            await file_lines(t, done.output_file_id),
            await file_lines(t, done.error_file_id),
        )
        assert len(out) == 4 and len(errors) == 6
        assert {e["error"]["code"] for e in errors.values()} == {"batch_cancelled"}
        assert all(e["response"] is None for e in errors.values())
        await site.settled_cleanly()


async def test_the_window_expires_with_partial_output(tmp_path: Path) -> None:
    backend, hold = held_backend()
    settings = {"batch_concurrency": 3, "batch_window_seconds": 1}
    async with running_site(tmp_path, settings, backend=backend) as site:
        t = await site.tenant()
        batch = await create(t, [line(f"r{i}") for i in range(8)])
        for i in range(3):
            await backend.held(i)
        await asyncio.sleep(1.3)  # past the window: the five lines not started expire
        hold.set()
        done = await finished(t, batch.id)
        assert done.status == "expired" and done.expired_at is not None
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (3, 5)
        errors = await file_lines(t, done.error_file_id)
        assert {e["error"]["code"] for e in errors.values()} == {"batch_expired"}
        assert len(await file_lines(t, done.output_file_id)) == 3
        await site.settled_cleanly()


async def test_lines_short_of_credit_are_error_lines_and_the_batch_goes_on(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        # A line holds 7 × 0.5 + 16 × 1 → 20 µc at the batch price and costs 7: the grant
        # covers two holds at once; the rest of the first wave is refused.
        t = await site.tenant(grant=45)
        done = await finished(t, (await create(t, [line(f"r{i}") for i in range(12)])).id)
        assert done.status == "completed"
        counts = done.request_counts
        assert counts is not None and counts.completed >= 1 and counts.failed >= 1
        errors = await file_lines(t, done.error_file_id)
        for e in errors.values():
            assert e["response"]["status_code"] == 402
            assert e["response"]["body"]["error"]["type"] == "insufficient_quota"
        assert await site.balance(t) == 45 - 7 * counts.completed
        await site.settled_cleanly()


async def test_lines_wait_for_the_keys_concurrency_share_and_never_fail_for_it(
    tmp_path: Path,
) -> None:
    backend = FakeBackend(script=Script(delay=0.02))
    async with running_site(tmp_path, backend=backend) as site:
        t = await site.tenant()
        await site.limit(t, concurrent=2)  # batch lines: half of it, one at a time
        batch = await create(t, [line(f"r{i}") for i in range(6)])
        most = 0
        while (got := await t.oai.batches.retrieve(batch.id)).status not in ("completed",):
            most = max(most, sum(r.begun and not r.closed for r in backend.runs))
            await asyncio.sleep(0.005)
        assert got.request_counts is not None and got.request_counts.completed == 6
        assert most == 1
        await site.settled_cleanly()


async def test_revoking_the_key_stops_the_batch_within_a_second(tmp_path: Path) -> None:
    backend, hold = held_backend()
    async with running_site(tmp_path, {"batch_concurrency": 2}, backend=backend) as site:
        t = await site.tenant()
        batch = await create(t, [line(f"r{i}") for i in range(6)])
        await backend.held(0)
        await backend.held(1)
        revoked = asyncio.get_running_loop().time()
        await site.services.accounts.revoke_key(t.account_id, t.key_id)
        store = site.app.state.batches.store
        while True:
            row = await store.get(t.account_id, batch.id)
            if row.status == "completed":
                break
            assert asyncio.get_running_loop().time() - revoked < 1.5, row
            await asyncio.sleep(0.02)
        assert row.errored == 6 and row.succeeded == 0
        assert all(r.closed for r in backend.runs) and len(backend.runs) == 2
        hold.set()
        await site.settled_cleanly()


async def test_a_lost_claim_settles_nothing_and_the_new_claim_settles_once(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path, {"batch_runner": False}) as site:
        t = await site.tenant()
        key = await site.services.accounts.store.key_by_id(t.account_id, t.key_id)
        batches = site.app.state.batches
        body = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
        row = await batches.create_messages(key, [{"custom_id": "only", "params": body}])
        store, ledger = batches.store, site.services.accounts.ledger
        past = datetime.now(UTC) - timedelta(seconds=1)
        (first,) = await store.claim(row.id, "replica-a", 5, past)  # its lease lapses at once
        (second,) = await store.claim(row.id, "replica-b", 5, past + timedelta(hours=1))
        assert (first.lease, second.lease) == (1, 2)
        before = await site.balance(t)

        async def attempt(lease: int, text: str) -> LineResult:
            hold = await ledger.hold(t.account_id, t.key_id, 100, f"{row.id}-0")
            fence = LineResult(row.id, 0, lease, "succeeded", text)
            await ledger.settle(hold, 40, None, fence)
            return fence

        late = await attempt(first.lease, '{"from": "a"}')
        assert late.won is False and await site.balance(t) == before  # released, no charge
        won = await attempt(second.lease, '{"from": "b"}')
        assert won.won is True and won.charged == 40
        again = await attempt(second.lease, '{"from": "b again"}')
        assert again.won is False
        assert await site.balance(t) == before - 40
        results = [r async for r in store.results(row.id)]
        assert [(r.outcome, orjson.loads(r.result or "null")) for r in results] == [
            ("succeeded", {"from": "b"})
        ]
        got = await store.get(t.account_id, row.id)
        assert (got.succeeded, got.cost) == (1, 40)
        await site.settled_cleanly()


async def test_batch_lines_count_in_the_storage_quota(tmp_path: Path) -> None:
    async with running_site(tmp_path, {"storage_quota_bytes": 20_000}) as site:
        t = await site.tenant()
        lines = [line(f"r{i}") for i in range(3)]
        file_id = await upload(t, lines)
        stored_file = await site.services.files.get(t.account_id, file_id)
        done = await finished(t, (await create_from(t, file_id)).id)
        assert done.status == "completed"
        used = await used_bytes(site, t)
        # The input file, the output file, and the lines' custom ids (bodies and results
        # were dropped once the batch ended: the files hold them).
        output = await site.services.files.get(t.account_id, done.output_file_id)
        assert used == stored_file.bytes + output.bytes + sum(len(f"r{i}") for i in range(3))
        big = [
            line(f"x{i}", {"model": MODEL, "messages": [{"role": "user", "content": "y" * 950}]})
            for i in range(9)
        ]
        failed = await finished(t, (await create_from(t, await upload(t, big))).id)
        assert failed.status == "failed" and failed.errors is not None
        assert failed.errors.data[0].code == "storage_quota_exceeded"
        assert await used_bytes(site, t) < 20_000


async def test_an_anthropic_batch_ended_can_be_deleted_and_frees_its_bytes(
    tmp_path: Path,
) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        params = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
        made = await t.claude.messages.batches.create(
            requests=[{"custom_id": "a", "params": params}]  # type: ignore[list-item]
        )
        for _ in range(400):
            got = await t.claude.messages.batches.retrieve(made.id)
            if got.processing_status == "ended":
                break
            await asyncio.sleep(0.05)
        assert got.request_counts.succeeded == 1
        assert await used_bytes(site, t) > 0  # its result is kept for `results`
        await t.claude.messages.batches.delete(made.id)
        assert await used_bytes(site, t) == 0
        other = await site.tenant()
        with pytest.raises(anthropic.NotFoundError):
            await other.claude.messages.batches.retrieve(made.id)


async def create_from(t, file_id):  # type: ignore[no-untyped-def]
    return await t.oai.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )


async def used_bytes(site, t) -> int:  # type: ignore[no-untyped-def]
    from tokendock.storage.quota import StorageUsage

    return await StorageUsage(site.services.accounts.store.engine).used(t.account_id)


async def test_a_server_stopping_gives_its_lines_back_unbilled(tmp_path: Path) -> None:
    backend, _hold = held_backend()
    settings = {"batch_concurrency": 2}
    async with running_site(tmp_path, settings, backend=backend) as site:
        t = await site.tenant()
        batch = await create(t, [line(f"r{i}") for i in range(4)])
        await backend.held(0)
        await backend.held(1)
        url = str(site.services.accounts.store.engine.url)
    # Stopped mid-line: nothing charged, no usage row, the lines pending again.
    engine = create_engine(url)
    async with engine.connect() as conn:
        states = (await conn.execute(select(batch_lines.c.state))).scalars().all()
        usage = (await conn.execute(select(usage_records.c.id))).all()
        balance = (await conn.execute(select(accounts.c.balance))).scalars().all()
    await engine.dispose()
    assert sorted(states) == ["pending"] * 4 and usage == [] and balance == [GRANT]
    async with running_site(tmp_path, settings, url=url) as again:
        t.oai, t.claude = again.clients(t.key)
        done = await finished(t, batch.id)  # the restarted runner (scripted: no hold) ends it
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 4
        assert len(await again.usage(t)) == 4
        assert await again.balance(t) == GRANT - 4 * 7
        await again.settled_cleanly()

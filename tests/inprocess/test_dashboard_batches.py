"""The dashboard's Batches and Files pages in-process: a batch made with the official SDK shows
with its progress, counts and cost; its output downloads through the dashboard byte for byte as
the Files API serves it; Cancel stops a running batch; a file is deleted only with the CSRF
token; another account's batch or file is a 404 on every route; the usage page shows what
batches cost apart."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import Batch

from tests.inprocess.fake_backend import FakeBackend, Script
from tests.inprocess.site import BASE, MODEL, Site, running_site
from tests.inprocess.test_batches import jsonl, line

pytestmark = pytest.mark.asyncio
PASSWORD = "pw-long-enough"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Visitor:
    """A signed-in browser: its own cookie jar, and the CSRF token of the last page it got."""

    def __init__(self, http: httpx.AsyncClient, key: str, site: Site):
        self.http = http
        self.key = key
        self.oai, self.claude = site.clients(key)
        self.csrf = ""

    async def get(self, path: str) -> httpx.Response:
        got = await self.http.get(path)
        found = CSRF.search(got.text)
        if found:
            self.csrf = found.group(1)
        return got

    async def post(self, path: str, csrf: bool = True) -> httpx.Response:
        return await self.http.post(path, data={"csrf": self.csrf} if csrf else {})


@asynccontextmanager
async def visitor(site: Site) -> AsyncIterator[Visitor]:
    """A new account with a key, signed in to the dashboard in its own client."""
    email = f"d-{secrets.token_hex(4)}@example.com"
    accounts = site.services.accounts
    account_id = await accounts.create_account(email, PASSWORD, grant=10_000_000)
    key = await accounts.create_key(account_id, "batches")
    transport = httpx.ASGITransport(app=site.app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        v = Visitor(http, key.secret, site)
        await v.get("/login")
        signed = await http.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf": v.csrf}
        )
        assert signed.status_code == 303
        await v.get("/dashboard")
        yield v


async def upload(oai: openai.AsyncOpenAI, lines: list[Any]) -> str:
    return (await oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")).id


async def finished(oai: openai.AsyncOpenAI, batch_id: str) -> Batch:
    for _ in range(400):
        got = await oai.batches.retrieve(batch_id)
        if got.status in ("completed", "failed", "expired", "cancelled"):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{batch_id} is still {got.status}")


def row_of(page: str, batch_id: str) -> str:
    found = re.search(rf'<tr data-batch-id="{batch_id}".*?</tr>', page, re.S)
    assert found, page
    return found.group(0)


def cell(html: str, testid: str) -> str:
    found = re.search(rf'data-testid="{testid}">([^<]*)<', html)
    assert found, html
    return found.group(1).strip()


async def test_a_finished_batch_its_files_and_the_usage_page(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site, visitor(site) as me, visitor(site) as other:
        lines = [line(f"q-{i}") for i in range(3)]
        lines.append(line("bad", {"model": MODEL, "messages": "nope"}))
        batch = await me.oai.batches.create(
            input_file_id=await upload(me.oai, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        done = await finished(me.oai, batch.id)
        assert done.status == "completed" and done.output_file_id and done.error_file_id
        cost = done.model_extra["cost"] if done.model_extra else None

        page = await me.get("/dashboard/batches")
        assert page.status_code == 200
        row = row_of(page.text, batch.id)
        assert cell(row, "batch-status") == "completed"
        assert cell(row, "batch-progress") == "4/4"
        assert cell(row, "batch-cost") == cost
        assert "Cancel</button>" not in row
        assert 'http-equiv="refresh"' not in page.text  # nothing runs: no reloading

        for file_id in (done.output_file_id, done.error_file_id):
            mine = await me.get(f"/dashboard/files/{file_id}/content")
            assert mine.status_code == 200
            assert "attachment" in mine.headers["content-disposition"]
            assert mine.content == (await me.oai.files.content(file_id)).content
            theirs = await other.get(f"/dashboard/files/{file_id}/content")
            assert theirs.status_code == 404 and mine.content not in theirs.content
        assert (
            b'"custom_id":"bad"'
            in (await me.get(f"/dashboard/files/{done.error_file_id}/content")).content
        )

        files = await me.get("/dashboard/files")
        for file_id in (batch.input_file_id, done.output_file_id, done.error_file_id):
            assert f'data-file-id="{file_id}"' in files.text
        assert "q-0" not in (await other.get("/dashboard/files")).text
        assert batch.id not in (await other.get("/dashboard/batches")).text

        usage = await me.get("/dashboard/usage")
        assert cell(usage.text, "batch-cost") == cost
        assert cell(usage.text, "batch-requests") == "3"
        assert cell(usage.text, "total-cost") == cost  # nothing but the batch was used
        await me.oai.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "interactive"}]
        )
        usage = await me.get("/dashboard/usage")
        assert cell(usage.text, "batch-cost") == cost != cell(usage.text, "total-cost")
        assert cell(usage.text, "batch-requests") == "3"


async def test_delete_needs_the_csrf_token_and_the_owner(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site, visitor(site) as me, visitor(site) as other:
        made = await me.oai.files.create(file=("notes.jsonl", b"{}\n"), purpose="user_data")
        await me.get("/dashboard/files")
        await other.get("/dashboard/files")
        assert (await me.post(f"/dashboard/files/{made.id}/delete", csrf=False)).status_code == 403
        assert (await other.post(f"/dashboard/files/{made.id}/delete")).status_code == 404
        assert (await me.oai.files.retrieve(made.id)).id == made.id  # still there
        gone = await me.post(f"/dashboard/files/{made.id}/delete")
        assert gone.status_code == 303
        shown = await me.get(gone.headers["location"])
        assert f"Deleted <code>{made.id}</code>" in shown.text
        assert f'data-file-id="{made.id}"' not in shown.text
        with pytest.raises(openai.NotFoundError):
            await me.oai.files.retrieve(made.id)
        assert (await me.get(f"/dashboard/files/{made.id}/content")).status_code == 404
        assert (await me.get("/dashboard/files?after=file-nope")).status_code == 200


async def test_cancel_a_running_batch(tmp_path: Path) -> None:
    hold = asyncio.Event()
    backend = FakeBackend(script=Script(hold=hold, hold_after=1))
    settings = {"batch_concurrency": 1}
    async with (
        running_site(tmp_path, settings, backend) as site,
        visitor(site) as me,
        visitor(site) as other,
    ):
        batch = await me.oai.batches.create(
            input_file_id=await upload(me.oai, [line(f"c-{i}") for i in range(6)]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        await asyncio.wait_for(backend.held(0), 10)  # the first line runs, held
        page = await me.get("/dashboard/batches")
        row = row_of(page.text, batch.id)
        assert cell(row, "batch-status") == "in_progress" and "Cancel</button>" in row
        assert 'http-equiv="refresh"' in page.text  # it reloads itself while the batch runs

        await other.get("/dashboard/batches")
        assert (await other.post(f"/dashboard/batches/{batch.id}/cancel")).status_code == 404
        assert (
            await me.post(f"/dashboard/batches/{batch.id}/cancel", csrf=False)
        ).status_code == 403
        assert (await me.oai.batches.retrieve(batch.id)).status == "in_progress"
        cancelled = await me.post(f"/dashboard/batches/{batch.id}/cancel")
        assert cancelled.status_code == 303
        assert (await me.oai.batches.retrieve(batch.id)).status == "cancelling"
        hold.set()
        done = await finished(me.oai, batch.id)
        assert done.status == "cancelled" and done.request_counts is not None
        assert done.request_counts.total == 6 and done.request_counts.completed < 6
        row = row_of((await me.get("/dashboard/batches")).text, batch.id)
        assert cell(row, "batch-status") == "cancelled" and "Cancel</button>" not in row
        assert done.error_file_id and done.error_file_id in row  # the lines never run
        await site.settled_cleanly()


async def test_an_anthropic_batch_and_its_results(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site, visitor(site) as me, visitor(site) as other:
        params = {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
        made = await me.claude.messages.batches.create(
            requests=[{"custom_id": f"m-{i}", "params": params} for i in range(2)]  # type: ignore[typeddict-item]
        )
        for _ in range(400):
            got = await me.claude.messages.batches.retrieve(made.id)
            if got.processing_status == "ended":
                break
            await asyncio.sleep(0.05)
        assert got.processing_status == "ended" and got.request_counts.succeeded == 2
        row = row_of((await me.get("/dashboard/batches")).text, made.id)
        assert cell(row, "batch-status") == "ended (completed)"
        assert cell(row, "batch-progress") == "2/2"
        results = await me.get(f"/dashboard/batches/{made.id}/results")
        assert results.status_code == 200
        api = await site.http.get(
            f"/v1/messages/batches/{made.id}/results", headers={"x-api-key": me.key}
        )
        assert results.content == api.content and b'"type":"succeeded"' in api.content
        assert (await other.get(f"/dashboard/batches/{made.id}/results")).status_code == 404
        assert made.id not in (await other.get("/dashboard/batches")).text

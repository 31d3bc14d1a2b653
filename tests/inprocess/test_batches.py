"""The Batch API in-process: the official openai SDK uploads a JSONL file, creates a batch,
polls it and reads the output and error files; the runner inside the app runs every line
through the one pipeline (a scripted model), billed at the batch price."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from tests.inprocess.site import MODEL, Tenant, running_site

pytestmark = pytest.mark.asyncio


def line(custom_id: str, body: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    body = body or {"model": MODEL, "messages": [{"role": "user", "content": custom_id}]}
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
        **over,
    }


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (item if isinstance(item, bytes) else orjson.dumps(item)) + b"\n" for item in lines
    )


async def upload(t: Tenant, lines: list[Any]) -> str:
    made = await t.oai.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return made.id


async def finished(t: Tenant, batch_id: str, seconds: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        got = await t.oai.batches.retrieve(batch_id)
        if got.status in ("completed", "failed", "expired", "cancelled"):
            return got
        assert asyncio.get_running_loop().time() < deadline, got
        await asyncio.sleep(0.05)


async def file_lines(t: Tenant, file_id: str | None) -> dict[str, Any]:
    if file_id is None:
        return {}
    content = await t.oai.files.content(file_id)
    rows = [orjson.loads(x) for x in content.content.splitlines() if x.strip()]
    return {r["custom_id"]: r for r in rows}


async def test_a_batch_runs_every_line_once_at_the_batch_price(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        before = await site.balance(t)
        lines = [line(f"req-{i}") for i in range(5)]
        lines.append(line("bad-body", {"model": MODEL, "messages": "nope"}))
        lines.append(
            line(
                "streamed",
                {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x"}]},
            )
        )
        batch = await t.oai.batches.create(
            input_file_id=await upload(t, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"job": "eval"},
        )
        assert batch.status == "validating" and batch.metadata == {"job": "eval"}
        done = await finished(t, batch.id)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (
            done.request_counts.total,
            done.request_counts.completed,
            done.request_counts.failed,
        ) == (7, 5, 2)
        out = await file_lines(t, done.output_file_id)
        assert sorted(out) == [f"req-{i}" for i in range(5)]
        for row in out.values():
            response = row["response"]
            assert response["status_code"] == 200 and row["error"] is None
            body = response["body"]
            assert body["object"] == "chat.completion"
            assert body["choices"][0]["message"]["content"] == "Hello, world"
            assert body["usage"]["completion_tokens"] == 3
        errors = await file_lines(t, done.error_file_id)
        assert sorted(errors) == ["bad-body", "streamed"]
        assert errors["streamed"]["response"]["status_code"] == 400
        assert errors["streamed"]["response"]["body"]["error"]["param"] == "stream"
        assert errors["bad-body"]["response"]["body"]["error"]["param"].startswith("messages")
        usage = await site.usage(t)
        assert len(usage) == 5
        assert all(u["request_id"].startswith(batch.id) for u in usage)
        assert {u["endpoint"] for u in usage} == {"batch.chat.completions"}
        # 7 prompt tokens at 0.5 µc and 3 completion tokens at 1 µc: 6.5 → 7 µc a line.
        charged = before - await site.balance(t)
        assert charged == 5 * 7 == sum(u["cost"] for u in usage)
        assert done.model_extra is not None and done.model_extra["cost"] == "0.000035"
        await site.settled_cleanly()


async def test_an_invalid_file_fails_the_batch_naming_the_line(tmp_path: Path) -> None:
    cases = {
        "duplicate_custom_id": [line("a"), line("a")],
        "mismatched_endpoint": [line("a"), line("b", url="/v1/completions")],
        "invalid_json_line": [line("a"), b"{not json"],
        "mismatched_model": [
            line("a"),
            line("b", {"model": "fake-embed", "messages": []}),
        ],
    }
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        for code, lines in cases.items():
            batch = await t.oai.batches.create(
                input_file_id=await upload(t, lines),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            done = await finished(t, batch.id)
            assert done.status == "failed", (code, done)
            assert done.errors is not None and done.errors.data
            first = done.errors.data[0]
            assert (first.code, first.line) == (code, 2), (code, first)
            assert done.request_counts is not None and done.request_counts.total == 0
        assert await site.usage(t) == []
        await site.settled_cleanly()


async def test_bad_parameters_and_other_accounts(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t, other = await site.tenant(), await site.tenant()
        file_id = await upload(t, [line("a")])
        with pytest.raises(openai.BadRequestError) as window:
            await t.oai.batches.create(
                input_file_id=file_id,
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        assert window.value.body["param"] == "completion_window"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as endpoint:
            await t.oai.batches.create(
                input_file_id=file_id,
                endpoint="/v1/nope",  # type: ignore[arg-type]
                completion_window="24h",
            )
        assert endpoint.value.body["param"] == "endpoint"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError) as foreign:
            await other.oai.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
        assert foreign.value.body["param"] == "input_file_id"  # type: ignore[index]
        not_batch = await t.oai.files.create(file=("x.jsonl", b"{}\n"), purpose="user_data")
        with pytest.raises(openai.BadRequestError) as purpose:
            await t.oai.batches.create(
                input_file_id=not_batch.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
        assert purpose.value.body["param"] == "input_file_id"  # type: ignore[index]
        batch = await t.oai.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for call in (other.oai.batches.retrieve, other.oai.batches.cancel):
            with pytest.raises(openai.NotFoundError):
                await call(batch.id)
        assert [b.id async for b in other.oai.batches.list()] == []
        assert [b.id async for b in t.oai.batches.list()] == [batch.id]
        await finished(t, batch.id)


async def test_embeddings_and_responses_lines_answer_as_their_routes(tmp_path: Path) -> None:
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        embed = [
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "fake-embed", "input": ["a", "b"]},
            }
            for i in range(2)
        ]
        batch = await t.oai.batches.create(
            input_file_id=await upload(t, embed),
            endpoint="/v1/embeddings",
            completion_window="24h",
        )
        done = await finished(t, batch.id)
        out = await file_lines(t, done.output_file_id)
        body = out["e0"]["response"]["body"]
        assert body["object"] == "list" and len(body["data"]) == 2
        assert body["data"][1]["embedding"] == [2.0] * 4
        asks = [
            {
                "custom_id": "r0",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": MODEL, "input": "hi", "max_output_tokens": 8},
            },
            {
                "custom_id": "r1",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": MODEL, "input": "hi", "background": True},
            },
            {
                "custom_id": "r2",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": MODEL, "input": "hi", "conversation": "conv_123"},
            },
        ]
        batch = await t.oai.batches.create(
            input_file_id=await upload(t, asks),
            endpoint="/v1/responses",
            completion_window="24h",
        )
        done = await finished(t, batch.id)
        out = await file_lines(t, done.output_file_id)
        body = out["r0"]["response"]["body"]
        assert body["object"] == "response" and body["status"] == "completed"
        assert body["output"][0]["content"][0]["text"] == "Hello, world"
        assert body["usage"]["output_tokens"] == 3
        errors = await file_lines(t, done.error_file_id)
        assert errors["r1"]["response"]["body"]["error"]["param"] == "background"
        assert errors["r2"]["response"]["body"]["error"]["param"] == "conversation"
        await site.settled_cleanly()


async def test_an_input_file_over_200_mb_fails_the_batch(tmp_path: Path, monkeypatch: Any) -> None:
    from tokendock.services import batches

    monkeypatch.setattr(batches, "MAX_INPUT_BYTES", 100)  # what 200 MB is, for a test's file
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        batch = await t.oai.batches.create(
            input_file_id=await upload(t, [line("a"), line("b")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        assert batch.status == "failed" and batch.errors is not None
        assert batch.errors.data[0].code == "file_too_large"
        assert (await finished(t, batch.id)).status == "failed"


async def test_ids_that_name_nothing_are_not_found(tmp_path: Path) -> None:
    """A NUL (PostgreSQL's text cannot hold one) or any odd byte in an id or a cursor finds
    nothing, without reaching the database (storage/ids.py)."""
    async with running_site(tmp_path) as site:
        t = await site.tenant()
        for bad in ("a\x00b", "batch_\u00e9", "x" * 65):
            with pytest.raises(openai.NotFoundError):
                await t.oai.batches.retrieve(bad)
            with pytest.raises(openai.NotFoundError):
                await t.oai.files.retrieve(bad)
            assert [b async for b in t.oai.batches.list(after=bad)] == []
            got = await site.http.get(
                "/v1/messages/batches", params={"before_id": bad}, headers=t.auth
            )
            assert got.status_code == 200 and got.json()["data"] == []

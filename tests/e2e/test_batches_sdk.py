"""Batches on the real server and model, driven by the official openai SDK: a batch survives
SIGKILL (every line's result exactly once, charged Σ line costs, `ledger verify` clean), and
two replicas on one PostgreSQL database share a batch's lines without running one twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from sqlalchemy import select

from tests.e2e.money import assert_adds_up
from tests.e2e.server import BACKENDS, POSTGRES_URL, Server, start_server
from tests.e2e.test_shutdown import GEMMA
from tokendock.storage.db import create_engine
from tokendock.storage.tables import holds

MODEL = "gemma-3-270m"
FAST = {
    "TOKENDOCK_BATCH_LEASE_SECONDS": "2",  # a dead process's lines are claimed again soon
    "TOKENDOCK_HOLD_TTL_SECONDS": "3",
    "TOKENDOCK_SWEEP_SECONDS": "1",
}


def env(tmp_path: Path) -> dict[str, str]:
    models = tmp_path / "models.toml"
    models.write_text(GEMMA)
    return {"TOKENDOCK_MODELS_FILE": str(models), **FAST}


def sdk(srv: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=2, timeout=60)


def batch_of(client: openai.OpenAI, n: int) -> str:
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "max_tokens": 3,
                "temperature": 0,
                "messages": [{"role": "user", "content": f"Say the number {i}."}],
            },
        }
        for i in range(n)
    ]
    data = b"".join(orjson.dumps(x) + b"\n" for x in lines)
    upload = client.files.create(file=("lines.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    return batch.id


def wait(client: openai.OpenAI, batch_id: str, until: Any, seconds: float = 240) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = client.batches.retrieve(batch_id)
        if until(got):
            return got
        assert time.monotonic() < deadline, got
        time.sleep(0.2)


def outputs(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    text = client.files.content(file_id).content
    return [orjson.loads(x) for x in text.splitlines() if x.strip()]


def check_once(client: openai.OpenAI, srv: Server, done: Any, n: int, email: str) -> None:
    """Every line exactly once in the output, one usage row per line, the batch's cost the
    sum of its lines' charges, and the ledger adds up."""
    assert done.status == "completed", done
    rows = outputs(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in rows) == sorted(f"line-{i}" for i in range(n))
    assert done.error_file_id is None
    money = assert_adds_up(srv, {email: 100_000_000})
    usage = [u for u in money.usage if u["email"] == email]
    assert len(usage) == n == len({u["request_id"] for u in usage})
    assert {u["endpoint"] for u in usage} == {"batch.chat.completions"}
    assert int(float(done.model_extra["cost"]) * 1_000_000) == money.charged(email)


# PostgreSQL when the suite has it (its fenced settlement and SKIP LOCKED claims), else SQLite;
# the SQLite fence is also tested in-process (tests/inprocess/test_batch_lifecycle.py).
@pytest.mark.parametrize("backend", BACKENDS[-1:])
def test_a_batch_survives_sigkill_and_runs_every_line_once(tmp_path: Path, backend: str) -> None:
    srv = start_server(tmp_path, env(tmp_path), backend=backend)
    try:
        email = "batch-kill@example.com"
        key = srv.new_key(email, "100")
        client = sdk(srv, key)
        batch_id = batch_of(client, 200)
        wait(client, batch_id, lambda b: b.request_counts and b.request_counts.completed >= 40)
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait(10)
        again = start_server(tmp_path, env(tmp_path), database_url=srv.database_url)
        try:
            client = sdk(again, key)
            done = wait(client, batch_id, lambda b: b.status not in ("in_progress", "finalizing"))
            check_once(client, again, done, 200, email)
        finally:
            again.stop()
    finally:
        srv.stop()


@pytest.mark.skipif(not POSTGRES_URL, reason="replicas share PostgreSQL")
def test_two_replicas_share_a_batch_without_running_a_line_twice(tmp_path: Path) -> None:
    a = start_server(tmp_path, env(tmp_path), backend="postgres")
    try:
        b = start_server(tmp_path, env(tmp_path), database_url=a.database_url)
        try:
            email = "batch-replicas@example.com"
            key = a.new_key(email, "100")
            client = sdk(a, key)
            batch_id = batch_of(client, 120)
            done = wait(
                client,
                batch_id,
                lambda x: x.status not in ("validating", "in_progress", "finalizing"),
            )
            check_once(client, a, done, 120, email)
            owners = hold_owners(a.database_url)
            assert len({o.rsplit("/", 1)[0] for o in owners}) == 2, owners  # both ran lines
        finally:
            b.stop()
    finally:
        a.stop()


def hold_owners(database_url: str) -> list[str]:
    import asyncio

    async def run() -> list[str]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return [r.owner for r in await conn.execute(select(holds.c.owner))]
        finally:
            await engine.dispose()

    return asyncio.run(run())

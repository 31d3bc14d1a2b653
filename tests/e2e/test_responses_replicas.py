"""Background responses with two replicas sharing one PostgreSQL database (what
`tokendock serve` on several machines is): a cancel that reaches the other replica stops the
work where it runs, billed for what was generated; a replica that shuts down ends its running
background responses `failed`, which a client polling the other replica sees."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.money import assert_adds_up
from tests.e2e.server import POSTGRES_URL, Server, start_server
from tests.e2e.test_responses_sdk import STORY, usage_rows
from tests.e2e.test_shutdown import GEMMA
from tests.e2e.upstreams import cost

pytestmark = pytest.mark.skipif(
    not POSTGRES_URL, reason="replicas share PostgreSQL (TOKENDOCK_TEST_POSTGRES_URL)"
)
MODEL = "gemma-3-270m"
MAX = 1000  # far more than the time the test lets it generate


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    """Two server processes on one PostgreSQL database; the catalog prices gemma 2.5 / 10."""
    models = tmp_path / "models.toml"
    models.write_text(GEMMA)
    env = {"TOKENDOCK_MODELS_FILE": str(models), "TOKENDOCK_SHUTDOWN_GRACE_SECONDS": "1"}
    a = start_server(tmp_path, env, backend="postgres")
    try:
        b = start_server(tmp_path, env, database_url=a.database_url)
        b.key = a.key  # the bootstrap key lives in the shared database
        try:
            yield a, b
        finally:
            b.stop()
    finally:
        a.stop()


def sdk(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.v1, api_key=srv.key, max_retries=0, timeout=60)


def started(client: openai.OpenAI) -> tuple[str, str]:
    """A background response generating (in progress, a little made): its id and request id."""
    raw = client.responses.with_raw_response.create(
        model=MODEL, input=STORY, max_output_tokens=MAX, background=True
    )
    resp = raw.parse()
    deadline = time.monotonic() + 60
    while client.responses.retrieve(resp.id).status == "queued":
        assert time.monotonic() < deadline, "still queued"
        time.sleep(0.1)
    time.sleep(1.5)  # let it generate a little
    return resp.id, raw.headers["x-request-id"]


def settled(client: openai.OpenAI, response_id: str) -> Any:
    """Poll until the response's final state (with its usage) is written."""
    deadline = time.monotonic() + 30
    while True:
        resp = client.responses.retrieve(response_id)
        if resp.usage is not None and resp.status not in ("queued", "in_progress"):
            return resp
        assert time.monotonic() < deadline, f"never settled: {resp.status}"
        time.sleep(0.2)


def test_a_cancel_on_another_replica_stops_the_work(replicas: tuple[Server, Server]) -> None:
    a, b = replicas
    on_a, on_b = sdk(a), sdk(b)
    response_id, request_id = started(on_a)
    assert on_b.responses.cancel(response_id).status == "cancelled"
    done = settled(on_b, response_id)  # A's task noticed, stopped and wrote what it made
    assert done.status == "cancelled"
    (row,) = usage_rows(on_b, request_id)
    assert 0 < row["completion_tokens"] < MAX
    assert done.usage.output_tokens == row["completion_tokens"]
    assert done.usage.input_tokens == row["prompt_tokens"]
    assert row["cost_micro_credits"] == cost(row["prompt_tokens"], row["completion_tokens"])
    time.sleep(1.5)  # nothing more is generated or billed afterwards
    assert usage_rows(on_b, request_id) == [row]
    assert on_a.responses.retrieve(response_id).usage == done.usage


def test_a_replica_shutting_down_fails_its_background_responses(
    replicas: tuple[Server, Server],
) -> None:
    a, b = replicas
    for _ in range(3):  # sampled: a story may end (EOS) before the signal; take a running one
        response_id, request_id = started(sdk(a))
        if sdk(a).responses.retrieve(response_id).status == "in_progress":
            break
    a.process.send_signal(signal.SIGTERM)
    assert a.process.wait(30) == 0, a.log()
    on_b = sdk(b)
    done = on_b.responses.retrieve(response_id)  # written before A exited
    assert done.status == "failed" and done.error is not None
    assert done.error.message == "The server shut down."
    (row,) = usage_rows(on_b, request_id)
    assert done.usage is not None and done.usage.output_tokens == row["completion_tokens"]
    assert 0 < row["completion_tokens"] < MAX
    assert_adds_up(b, {})

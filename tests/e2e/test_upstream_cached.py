"""An upstream's prefix cache, end to end: the fault upstream (tests/e2e/fault_upstream.py, mode
"cached") reports `usage.prompt_tokens_details.cached_tokens` as vLLM, SGLang and llama.cpp's
server do; the gateway shows it on every wire (chat whole and streamed, Responses, Anthropic
Messages), records it, and bills those tokens at the catalog's cached input price.

Gateway prices: 2.5 µc a prompt token, 0.5 µc a cached one, 10 µc a completion token. The
upstream counts 6 prompt tokens ("say hello" + 4), 4 of them cached, and answers 6 tokens:
2 × 2.5 + 4 × 0.5 + 6 × 10 = 5 + 2 + 60 = 67 µc (75 µc with nothing cached).
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.e2e.server import BACKENDS, Server, start_server
from tests.e2e.upstreams import Upstream, start_fault, usage_row

MODEL = "up-cached"
MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "say hello"}]
PROMPT, CACHED, ANSWER_TOKENS = 6, 4, 6
COST = 67  # micro-credits (module docstring)


@pytest.fixture(scope="module")
def fault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    upstream = start_fault(tmp_path_factory.mktemp("fault-cached"))
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest, fault: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"gateway-cached-{request.param}")
    catalog = workdir / "models.toml"
    catalog.write_text(
        f'[models."{MODEL}"]\nengine = "upstream"\ncontext_length = 2048\n'
        f'[models."{MODEL}".price]\ninput = "2.5"\noutput = "10"\ncached_input = "0.5"\n'
        f'[[models."{MODEL}".deployments]]\nname = "cached"\nbase_url = "{fault.v1}"\n'
        'model = "cached"\n'
    )
    srv = start_server(workdir, {"TOKENDOCK_MODELS_FILE": str(catalog)}, backend=request.param)
    yield srv
    srv.stop()


@pytest.fixture
def oai(gateway: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30)


def test_chat_shows_records_and_bills_the_upstream_cache(
    gateway: Server, oai: openai.OpenAI
) -> None:
    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (PROMPT, CACHED)
    assert raw.headers["x-tokendock-cost"] == f"{COST / 1e6:.6f}"
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cached_tokens"]) == (PROMPT, CACHED)
    assert (row["cost_micro_credits"], row["estimated"]) == (COST, False)


def test_streamed_usage_chunk_carries_the_upstream_cache(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == CACHED
    assert getattr(usage, "cost", None) == f"{COST / 1e6:.6f}"


def test_responses_and_messages_show_the_upstream_cache(gateway: Server) -> None:
    oai = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=30)
    resp = oai.responses.create(model=MODEL, input="say hello")
    assert resp.usage is not None and resp.usage.input_tokens_details.cached_tokens == CACHED
    claude = anthropic.Anthropic(
        base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=30
    )
    msg = claude.messages.create(model=MODEL, max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens) == (PROMPT - CACHED, CACHED)
    with claude.messages.stream(model=MODEL, max_tokens=16, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        final = stream.get_final_message()
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (
        PROMPT - CACHED,
        CACHED,
    )

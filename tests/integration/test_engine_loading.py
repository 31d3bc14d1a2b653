"""A request that reaches the embedded engine while it loads is refused as not ready (503,
which a batch line waits out), never an internal error: loading sets the model before the
tokenizer and template, and the event loop runs requests in between (issue 21, found when a
restarted server's batch runner fed lines before its model had loaded)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tokendock.catalog import ModelSpec
from tokendock.errors import ModelNotReady
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.vocabulary import ChatTurn

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


async def test_a_request_while_the_model_loads_is_not_ready() -> None:
    spec = ModelSpec(id="gemma", path=GGUF, context_length=512, threads=1, chat_template="gemma")
    engine = LlamaEngine(spec, ROOT / "data")
    await asyncio.to_thread(engine._load)  # loaded, its worker not started yet
    try:
        with pytest.raises(ModelNotReady):
            await engine.tokenize_chat([ChatTurn("user", "hi")])
        with pytest.raises(ModelNotReady):
            await engine.tokenize("hi", chat=False)
    finally:
        await engine.close()

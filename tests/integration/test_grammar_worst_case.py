"""The worst schema the grammar bounds accept (bench/schemas.py `worst_accepted`: ~120 parse
stacks) still generates a valid answer on the real model, greedy and sampled — the bounds
refuse what stalls the engine, not what works."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest

from tokendock.catalog import ModelSpec
from tokendock.inference.engine.base import Generation, TextDelta
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.structured import OutputFormat, answer_grammar
from tokendock.inference.vocabulary import ChatTurn, Sampling

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"
sys.path.insert(0, str(ROOT / "bench"))
import schemas as bench  # noqa: E402

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


@pytest.mark.parametrize(
    "sampling", [Sampling(temperature=0.0), Sampling(temperature=1.0, seed=7)], ids=["greedy", "t1"]
)
async def test_the_worst_accepted_schema_generates_a_valid_answer(sampling: Sampling) -> None:
    spec = ModelSpec(
        id="gemma", path=GGUF, context_length=1024, threads=1, chat_template="gemma", slots=1
    )
    engine = LlamaEngine(spec, ROOT / "data")
    await engine.start()
    try:
        schema = bench.worst_accepted()
        grammar = answer_grammar(None, OutputFormat("json_schema", schema))
        assert grammar is not None and engine.check_grammar(grammar.text)
        ask = "Pick an option and its number, as a JSON array."
        prompt = await engine.tokenize_chat([ChatTurn("user", ask)])
        job = Generation(prompt, 40, sampling=sampling, grammar=grammar)
        text = "".join([e.text async for e in engine.generate(job) if isinstance(e, TextDelta)])
    finally:
        await engine.close()
    jsonschema.validate(json.loads(text), schema)

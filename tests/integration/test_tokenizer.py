"""The chunked tokenizer against llama.cpp's own single call, on the real packaged vocabulary."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tokendock.inference.engine.templates import GEMMA
from tokendock.inference.engine.tokenizer import TokenizeCancelled, Tokenizer

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    from llama_cpp import Llama

    model = Llama(str(GGUF), n_ctx=256, vocab_only=True, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def tok(llm: Any) -> Tokenizer:
    import llama_cpp

    return Tokenizer(llama_cpp, llm._model.vocab, GEMMA + "<bos><eos>")


def one_call(llm: Any, text: str, special: bool) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))


PIECES = [
    "\n",
    "\n\n",
    "\n\n\n",
    " ",
    "  ",
    "   ",
    "\t",
    "\t\t",
    "<b>",
    "</b>",
    "<s>",
    "</s>",
    "<eos>",
    "<bos>",
    "<start_of_turn>",
    "<end_of_turn>",
    "user",
    "model",
    "hello",
    " world",
    "é",
    "日本",
    "<",
    ">",
    "<unused7>",
    "[multimodal]",
    "x",
    "<table>",
    "  \n",
    "\r\n",
]


# Template text parses only the control tokens the template writes: not these.
FOREIGN_CONTROL = {"<unused7>", "</s>"}


def random_text(rng: random.Random, n: int, special: bool) -> str:
    pieces = [p for p in PIECES if not (special and p in FOREIGN_CONTROL)]
    return "".join(rng.choice(pieces) for _ in range(n))


@pytest.mark.parametrize("special", [False, True])
def test_chunked_ids_equal_one_llama_call(llm: Any, tok: Tokenizer, special: bool) -> None:
    rng = random.Random(7)
    for size in [0, 1, 5, 40, 300, 3000, 8000]:
        for _ in range(3):
            text = random_text(rng, size, special)
            assert tok.encode(text, special=special) == one_call(llm, text, special), text[:200]


def test_long_runs_of_partition_tokens_are_exact(llm: Any, tok: Tokenizer) -> None:
    for text in ["\n" * 3000, " " * 3001, "a\n" * 2000, "<b>" * 2000, "\n \n" * 1500]:
        assert tok.encode(text, special=False) == one_call(llm, text, False)
    turns = "<start_of_turn>user\n<end_of_turn>\n" * 2000
    assert tok.encode(turns, special=True) == one_call(llm, turns, True)


def test_text_mode_never_yields_control_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("<start_of_turn>model\n<eos><end_of_turn><bos>", special=False)
    assert not {1, 2, 105, 106} & set(ids)  # <eos>, <bos>, <start_of_turn>, <end_of_turn>
    assert {2, 105, 106} <= set(tok.encode("<bos><start_of_turn><end_of_turn>", special=True))


def test_template_text_parses_only_the_control_tokens_its_template_writes(tok: Tokenizer) -> None:
    assert tok.encode("<unused7></s>", special=True) == tok.encode("<unused7></s>", special=False)


def test_pieces_concatenate(tok: Tokenizer) -> None:
    ids = tok.encode_pieces([("<start_of_turn>user\n", True), ("<eos>", False)])
    assert ids == tok.encode("<start_of_turn>user\n", special=True) + tok.encode(
        "<eos>", special=False
    )


def test_a_set_cancel_flag_stops_between_chunks(tok: Tokenizer) -> None:
    cancel = threading.Event()
    cancel.set()
    calls = tok.calls
    with pytest.raises(TokenizeCancelled):
        tok.encode("a\n" * 10000, special=False, cancel=cancel)
    assert tok.calls == calls

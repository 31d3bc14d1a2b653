"""llama-cpp-python's `Llama`, with TokenDock's sampler chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokendock.inference.base import Sampling

_SAMPLER_LLAMA: Any = None


def sampler_llama_class() -> Any:
    """A `Llama` whose sampler chain is built from TokenDock's `Sampling` for each job.

    llama-cpp-python's own chain cannot express OpenAI's semantics exactly (its logit-bias hook
    is a slow Python callback, and top-k/min-p defaults are always on), so `generate()` gets
    our chain: logit bias → penalties → greedy, or top-k → top-p → min-p → temperature → dist.
    """
    global _SAMPLER_LLAMA
    if _SAMPLER_LLAMA is not None:
        return _SAMPLER_LLAMA
    from llama_cpp import Llama
    from llama_cpp import _internals as internals

    class SamplerLlama(Llama):
        next_sampling: Sampling = Sampling()
        next_history: Sequence[int] = ()  # tokens sampled before a resumed slice

        def _init_sampler(self, *args: Any, **kwargs: Any) -> Any:
            s = self.next_sampling
            chain = internals.LlamaSampler()  # type: ignore[no-untyped-call]
            self._build_chain(chain, s)
            # Replay the job's earlier tokens so the penalties see the same history.
            last_n = s.penalty_last_n
            history = self.next_history
            for token in history if last_n < 0 else history[-last_n:] if last_n else ():
                chain.accept(token)
            return chain

        def _build_chain(self, chain: Any, s: Sampling) -> None:
            if s.logit_bias:
                chain.add_logit_bias(self.n_vocab(), s.logit_bias)
            if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
                chain.add_penalties(
                    n_vocab=self.n_vocab(),
                    penalty_last_n=s.penalty_last_n,
                    penalty_repeat=s.repeat_penalty,
                    penalty_freq=s.frequency_penalty,
                    penalty_present=s.presence_penalty,
                )
            if s.temperature == 0.0:
                chain.add_greedy()
                return
            if s.top_k > 0:
                chain.add_top_k(s.top_k)
            if s.top_p < 1.0:
                chain.add_top_p(s.top_p, 1)
            if s.min_p > 0.0:
                chain.add_min_p(s.min_p, 1)
            chain.add_temp(s.temperature)
            chain.add_dist(self._seed)
            return

    _SAMPLER_LLAMA = SamplerLlama
    return SamplerLlama

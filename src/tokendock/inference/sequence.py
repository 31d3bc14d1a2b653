"""What the scheduler (scheduler.py) works with: a job in its slot (`Seq`), the loaded model's
handles (`Model`), and the rules for cutting a prompt into pieces (`chunk`) and for choices of
one prompt sharing its evaluation (`same_prompt`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tokendock.inference.base import TokenLogprob
from tokendock.inference.job import Job
from tokendock.inference.picker import FirstBytes, Picker
from tokendock.inference.slots import Slot

# A sequence's prompt tokens are decoded in pieces of at least this many (scheduler.py,
# "Determinism").
MIN_CHUNK = 8


@dataclass(eq=False, slots=True)
class Seq:
    """A job in a slot."""

    job: Job
    slot: Slot
    picker: Picker
    prompt: Sequence[int]
    limit: int  # tokens it may generate
    todo: int = 0  # prompt tokens decoded so far (from the cache or by this job)
    next: int | None = None  # sampled, to be decoded in the next step
    row: int = -1  # its logits row in this step's batch
    chunk: tuple[int, int] = (0, 0)  # (first row, tokens) of prompt decoded this step
    leader: Seq | None = None  # the choice of the same prompt whose KV it will copy
    followers: list[Seq] = field(default_factory=list)
    produced: int = 0  # tokens sampled (before a preemption too)
    scoring: bool = False  # the prompt's logprobs were asked for (echo): logits on every row
    scored: list[TokenLogprob] = field(default_factory=list)
    admitted: float = 0.0

    @property
    def prefilling(self) -> bool:
        return self.leader is None and self.next is None and self.todo < len(self.prompt)


class Model:
    """What the scheduler needs of a loaded model (llama.py makes it)."""

    def __init__(
        self,
        llama_cpp: Any,
        ctx: Any,
        vocab: Any,
        n_vocab: int,
        piece: Callable[[int], bytes],
        first_bytes: FirstBytes,
        bos: int | None,
    ):
        self.c = llama_cpp
        self.ctx = ctx
        self.memory = llama_cpp.llama_get_memory(ctx)
        self.vocab = vocab
        self.n_vocab = n_vocab
        self.piece = piece
        self.first_bytes = first_bytes
        self.bos = bos


def chunk(remaining: int, budget: int) -> int:
    """Prompt tokens to decode now: as many as the budget allows, never leaving fewer than
    `MIN_CHUNK` behind (0: wait for a step with more room)."""
    n = min(remaining, budget)
    left = remaining - n
    if 0 < left < MIN_CHUNK:
        n = remaining - MIN_CHUNK
    return n if n >= MIN_CHUNK or n == remaining else 0


def same_prompt(seq: Seq, prompt: Sequence[int]) -> bool:
    """A choice of the same prompt, still before its first token (the KV copy is of the prompt)."""
    if seq.leader is not None or seq.scoring or seq.produced or seq.next:
        return False
    return seq.prompt is prompt or (len(seq.prompt) == len(prompt) and seq.prompt == prompt)

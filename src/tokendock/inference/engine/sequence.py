"""What the scheduler (scheduler.py) works with: a job in its slot (`Seq`), the loaded model's
handles (`Model`), the rules for cutting a prompt into pieces (`chunk`) and for choices of one
prompt sharing its evaluation (`same_prompt`), and the step watchdog's limit and error."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tokendock.errors import GenerationFailed
from tokendock.inference.engine.base import Generation
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.picker import FirstBytes, Picker, score
from tokendock.inference.engine.slots import Slot
from tokendock.inference.vocabulary import TokenLogprob

# Determinism (the catalog's `deterministic = true`): at temperature 0 a request gets the tokens
# it gets alone, whatever runs beside it and whatever the cache held (up to near ties: see
# tests/integration/test_scheduler.py). Measured on llama.cpp's CPU kernels, a row's logits do
# not depend on the other sequences' rows in the batch, nor on how a prompt is cut into pieces
# of 8 tokens or more — as long as each sequence has KV cells of its own (no unified cache),
# weights are not repacked for batched kernels, and attention is not flash attention (llama.py
# sets all three; the default mode uses flash attention, whose many-row kernels give a prompt's
# scores other numbers than its one-row kernels). Pieces of 1 to 7 tokens do change the
# numbers, so a cached prefix always leaves at least `MIN_CHUNK` prompt tokens to evaluate and
# no chunk leaves a remainder below it.
MIN_CHUNK = 8

# The step watchdog: CPU seconds one sequence's share of a step (picking its token: sampler
# chain, grammar, logprobs) may take. The pre-admission bounds on grammars keep a step far
# below this; a sequence over it is ended (`step_timeout`), as a second line of defence, so no
# single request holds the one engine thread that every account's tokens go through.
STEP_LIMIT = 0.100


# Prompt tokens per step (each costs ~2.5-3 ms of a 2-core CPU, a step that decodes only one
# token per sequence ~22 ms; 256-token chunks are as efficient as 512 — measured): alone or
# beside streams of the same account, chunks big enough to be efficient yet short enough that a
# request arriving meanwhile waits little; beside another account's stream, small ones, so that
# account's tokens keep coming at about its fair share of the engine.
PREFILL_CHUNK = 256
PREFILL_SHARED = 16
# Prompt tokens scored per step for a job that asked for the prompt's logprobs (echo).
PROMPT_SCORE_BATCH = 64


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
    rowed: int = 0  # the step that last decoded its token (batch lines take turns by it)

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
        *,
        n_swa: int = 0,
    ):
        self.c = llama_cpp
        self.n_swa = n_swa  # the sliding-window layers' window (0: none)
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


def same_prompt(seq: Seq, gen: Generation, scoring: bool) -> bool:
    """`seq` can lead `gen`: a choice of the same prompt and owner (never another account's),
    still before its first token (the KV copy is of the prompt). A choice that must score the
    prompt follows only the choice scoring it for the same request (it shares the scores)."""
    if seq.leader is not None or seq.produced or seq.next is not None:
        return False
    if seq.job.gen.owner != gen.owner:
        return False
    if scoring or seq.scoring:
        return (
            scoring and seq.scoring and gen.scores is not None and seq.job.gen.scores is gen.scores
        )
    prompt = gen.prompt
    return seq.prompt is prompt or (len(seq.prompt) == len(prompt) and seq.prompt == prompt)


def step_timeout(took: float, limit: float = STEP_LIMIT) -> GenerationFailed:
    """The error a sequence ended by the watchdog gets: a 500 `engine_step_timeout` that the
    SDKs are told not to retry (the same request would be cut again)."""
    error = GenerationFailed(
        f"Generation stopped: choosing one token took {took * 1000:.0f} ms, over the engine's "
        f"limit of {limit * 1000:.0f} ms per step (usually a response_format or tool "
        "schema too costly to follow). The tokens produced so far are billed.",
        code="engine_step_timeout",
    )
    error.retry_after = math.inf
    return error


def new_picker(m: Model, job: Job) -> Picker:
    gen = job.gen
    return Picker(
        m.c,
        m.vocab,
        m.n_vocab,
        gen.sampling,
        seed=job.seed,
        piece=m.piece,
        grammar=gen.grammar,
        top_logprobs=gen.top_logprobs,
        index=m.first_bytes if gen.grammar is not None else None,
        ctx=m.ctx,
    )


def first_entry(m: Model, token: int) -> TokenLogprob:
    """A scored prompt's first token: nothing precedes it, so no logprob."""
    raw = m.piece(token)
    return TokenLogprob(raw.decode("utf-8", "replace"), math.nan, raw)


def score_rows(m: Model, seq: Seq, first: int, start: int, n: int) -> None:
    """Score the prompt tokens after positions start…start+n-1 from batch rows first…."""
    top = seq.job.gen.top_logprobs or 0
    prompt = seq.prompt
    for i in range(n):
        target = start + i + 1
        if target < len(prompt):
            logits = m.c.llama_get_logits_ith(m.ctx, first + i)
            values = np.ctypeslib.as_array(logits, shape=(m.n_vocab,))
            seq.scored.append(score(values, prompt[target], top, m.piece))


def scored_prompt(seq: Seq, bos: int | None) -> tuple[TokenLogprob, ...]:
    entries = seq.scored
    if seq.prompt[0] == bos:  # not text the client sent: the next one counts
        entries = entries[1:]
    return tuple(entries)


def hand_over(m: Model, leader: Seq, follower: Seq) -> None:
    """The follower gets a copy of the leader's cells (the prompt, or what it had decoded when
    it left early) and goes on from there."""
    m.c.llama_memory_seq_cp(m.memory, leader.slot.seq, follower.slot.seq, 0, -1)
    follower.slot.cells = list(leader.slot.cells)
    follower.todo = len(leader.slot.cells)
    follower.leader = None


def take(m: Model, slot: Slot, keep: int, source: Slot | None, owner: str) -> int:
    """Claim `slot` for `owner` with its first `keep` cells (copied from `source` first, if
    set); returns how many cells it kept. (`plan` keeps none of another owner's.)"""
    c, mem = m.c, m.memory
    slot.busy = True
    slot.owner = owner
    if source is not None:
        # Copies between sequences are whole (each has its own cells): copy, then trim.
        c.llama_memory_seq_cp(mem, source.seq, slot.seq, 0, -1)
        c.llama_memory_seq_rm(mem, slot.seq, keep, -1)
        slot.cells = source.cells[:keep]
    elif not c.llama_memory_seq_rm(mem, slot.seq, keep, -1):
        keep = 0
    else:
        del slot.cells[keep:]
    if keep and not window_kept(m, slot.seq, keep):
        keep = 0
    if not keep:
        c.llama_memory_seq_rm(mem, slot.seq, 0, -1)
        slot.cells.clear()
    return keep


def window_kept(m: Model, seq: int, keep: int) -> bool:
    """Do the sliding-window layers still hold the cells position `keep` attends to? They keep
    only about a window (+ a batch) of a sequence's latest positions: a prefix ending far
    before where its sequence went lost them and is evaluated again."""
    low = m.c.llama_memory_seq_pos_min(m.memory, seq)
    if low < 0:
        return False
    return not m.n_swa or low <= max(0, keep - m.n_swa)


def prefill_budget(running: list[Seq], prefilling: list[Seq]) -> int:
    """Prompt tokens this step may evaluate (see PREFILL_CHUNK)."""
    decoding = {seq.job.gen.owner for seq in running if seq.next is not None}
    if any(owner != seq.job.gen.owner for seq in prefilling for owner in decoding):
        return PREFILL_SHARED
    return PREFILL_CHUNK

"""The rows of one step's batch (scheduler.py): the last sampled token of every generating
sequence, then chunks of prompts being evaluated — interactive ones before batch lines'
(`Generation.background`), the shortest first — within this step's prompt budgets
(`lane_budgets`; the chunk sizes: sequence.py `PREFILL_CHUNK`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from tokendock.inference.engine.sequence import (
    PREFILL_SHARED,
    PROMPT_SCORE_BATCH,
    Seq,
    chunk,
    prefill_budget,
)

# (sequence, tokens, position of the first, which rows want logits: "last", "all" or "none")
Row: TypeAlias = tuple[Seq, Sequence[int], int, str]


def step_rows(running: list[Seq], room: int, batch_rows: int | None = None) -> list[Row]:
    """This step's rows, in sequence-id order: the last sampled token of every generating
    sequence, and prompt chunks of sequences still being prefilled — the shortest prompts
    first (a short request never waits behind long prompts), within `prefill_budget`.
    `batch_rows`: beside any interactive sequence, at most this many batch lines decode (those
    that waited longest for a row); the others keep their slot and their token for later."""
    rows: list[Row] = []
    paused = _paused(running, batch_rows)
    for seq in running:
        if seq.next is not None and seq not in paused:
            rows.append((seq, (seq.next,), len(seq.slot.cells), "last"))
    room -= len(rows)
    # Interactive prompts first, then batch lines'; within each, the shortest first.
    prefilling = sorted(
        (seq for seq in running if seq.prefilling),
        key=lambda s: (s.job.gen.background, len(s.prompt) - s.todo),
    )
    total, batch = lane_budgets(running, prefilling)
    if batch_rows == 0 and any(not seq.job.gen.background for seq in running):
        batch = 0  # batch lines pause: their prompts too
    budget = min(room, total)
    # Rows of logits for prompts being scored, this step (the context has room for these
    # plus one row per sequence).
    scores = PROMPT_SCORE_BATCH
    for seq in prefilling:
        if budget <= 0:
            break
        scoring, background = seq.scoring, seq.job.gen.background
        most = min(budget, batch) if background else budget
        n = chunk(len(seq.prompt) - seq.todo, min(most, scores) if scoring else most)
        if n == 0:
            continue
        done = seq.todo + n == len(seq.prompt)
        mode = "all" if scoring else "last" if done else "none"
        rows.append((seq, seq.prompt[seq.todo : seq.todo + n], seq.todo, mode))
        budget -= n
        if background:
            batch -= n
        if scoring:
            scores -= n
    rows.sort(key=lambda r: r[0].slot.seq)
    return rows


def lane_budgets(running: list[Seq], prefilling: list[Seq]) -> tuple[int, int]:
    """Prompt tokens this step may evaluate: in all, and for batch lines' prompts at most.
    Interactive prompts are budgeted among interactive sequences alone (a batch line's stream
    never shrinks them); a batch line's prompt beside an interactive stream is budgeted like
    another account's (small chunks: it never stalls that stream), else among batch lines."""
    interactive = [seq for seq in running if not seq.job.gen.background]
    batch = [seq for seq in running if seq.job.gen.background]
    total = prefill_budget(interactive, [seq for seq in prefilling if not seq.job.gen.background])
    if any(seq.next is not None for seq in interactive):
        return total, PREFILL_SHARED
    return total, prefill_budget(batch, [seq for seq in prefilling if seq.job.gen.background])


def _paused(running: list[Seq], batch_rows: int | None) -> set[Seq]:
    """Generating batch lines that get no row this step (see `step_rows`)."""
    if batch_rows is None or all(seq.job.gen.background for seq in running):
        return set()
    batch = [seq for seq in running if seq.job.gen.background and seq.next is not None]
    batch.sort(key=lambda seq: seq.rowed)
    return set(batch[batch_rows:])

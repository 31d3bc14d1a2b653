"""The engine's sequence slots and what each one's KV cells hold (the prefix cache).

A llama.cpp context with N sequences has N slots. A slot remembers the tokens its KV cells hold
(positions 0…len-1 of its sequence) after its request is done: the next request whose prompt
starts the same way reuses them (prefix caching). A new request takes the free slot whose cells
share the longest prefix with its prompt — or, when a busy slot shares a longer one (n choices of
one prompt, many users with one system prompt), a free slot that gets a copy of those cells
(llama.cpp copies the source's KV buffer; nothing is recomputed).

Tenants are isolated: a slot's cells belong to the owner (account) whose prompt filled them, and
only that owner's prompts are ever compared with them, reused or copied from them — as OpenAI
does, caches are not shared between accounts. Another owner's slot counts as empty: whoever
takes it starts from no cells (the scheduler clears them), so a cached count, a time to first
token or a choice of slot never depends on whether another account's prompt matched.

Pure bookkeeping: the scheduler does the llama.cpp calls the plan asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# A copy from another slot must save at least this many tokens over the best free slot's own.
MIN_COPY = 16


@dataclass(slots=True)
class Slot:
    seq: int  # the llama.cpp sequence id
    cells: list[int] = field(default_factory=list)  # tokens at positions 0… in its KV cells
    busy: bool = False
    used: int = (
        0  # when it was last taken (a step count): empty, then least recently used, go first
    )
    owner: str = ""  # whose prompt the cells hold: nobody else's prompt is compared with them


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a prompt goes: `slot`, keeping its first `keep` cells, after copying the first
    `keep` cells of `source` into it when `source` is set."""

    slot: Slot
    keep: int
    source: Slot | None = None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in strides first: prompts sharing a long system prompt are common.
    step = 64
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan(
    slots: Sequence[Slot],
    prompt: Sequence[int],
    *,
    owner: str,
    reuse: bool = True,
    tail: int = 1,
) -> Plan | None:
    """The free slot for `owner`'s `prompt` (None when every slot is busy). At least the
    prompt's last `tail` tokens are always evaluated again (the last one's logits start the
    answer). `reuse=False`: no cached cells (a prompt whose every token must be scored).
    Only `owner`'s own cells are ever matched; any other slot is taken as if empty."""
    free = [s for s in slots if not s.busy]
    if not free:
        return None
    busy = {s.seq for s in slots if s.busy}
    limit = len(prompt) - tail
    if not reuse or limit <= 0:
        return Plan(min(free, key=lambda s: (_gaps(busy, s.seq), _unused(s))), 0)

    # Cached tokens each slot shares with the prompt (only `owner`'s own cells count).
    shares = {
        s.seq: min(common_prefix(s.cells, prompt), limit) if s.owner == owner else 0 for s in slots
    }

    def shared(s: Slot) -> int:
        return shares[s.seq]

    keep = max(shared(s) for s in free)
    if keep >= MIN_COPY:  # a useful cached prefix: the slot holding the longest one
        best = min(free, key=lambda s: (-shared(s), _gaps(busy, s.seq), _unused(s)))
    else:  # nothing worth keeping: the slot that keeps running sequences together
        best = min(free, key=lambda s: (_gaps(busy, s.seq), -shared(s), _unused(s)))
    keep = shared(best)
    source, copied = None, keep
    for s in slots:
        if s.busy:
            n = shared(s)
            if n >= copied + MIN_COPY:
                source, copied = s, n
    if source is None:
        return Plan(best, keep)
    # Copying replaces the target's cells: take the free slot whose cache is least useful now.
    target = min(free, key=lambda s: (shared(s) > 0, _gaps(busy, s.seq), *_unused(s)))
    return Plan(target, copied, source)


def _gaps(busy: set[int], seq: int) -> int:
    """Runs of consecutive sequence ids among the busy ones with `seq` added. llama.cpp decodes
    a batch over per-sequence KV cells in one forward pass per such run: fewer is faster."""
    ids = busy | {seq}
    return sum(1 for i in ids if i - 1 not in ids)


def _unused(s: Slot) -> tuple[bool, int]:
    """Which slot to overwrite first: an empty one, then the least recently used."""
    return bool(s.cells), s.used

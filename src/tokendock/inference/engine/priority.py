"""Who gives up a slot when every slot is busy and someone waits (the scheduler's
`_make_room`). Two classes: interactive jobs, and batch lines (`Generation.background`, issue
21) — the lowest. Within each class accounts are treated alike.

- Interactive jobs wait: running batch lines give their slots up, one per waiting job, those
  cheapest to resume first (`yielding`). Only when no batch line runs does an interactive
  account holding no slot get one from the account holding the most, at least two (`victim`).
- Only batch lines wait: the same fairness rule among batch lines alone. A batch line never
  takes an interactive sequence's slot.

A sequence set aside goes back to the queue with what it sampled and resumes later from its
cells (scheduler.py): so no account waits for another's whole burst or `n`, and a batch never
delays an interactive request by more than a step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from tokendock.inference.engine.job import Job
from tokendock.inference.engine.sequence import Seq
from tokendock.inference.fair_queue import FairQueue


def live(job: Job) -> bool:
    """A queued job whose client is still there."""
    return not job.cancelled.is_set()


def set_aside(running: Sequence[Seq], jobs: FairQueue[Job]) -> list[Seq]:
    """The sequences to send back to the queue now (every slot is busy)."""
    wanted = jobs.waiting(live)
    if wanted:
        if any(seq.job.gen.background for seq in running):
            return yielding(running, wanted)
        seq = victim(running, jobs.waiting_owners(live))
    else:
        batch = [seq for seq in running if seq.job.gen.background]
        seq = victim(batch, jobs.waiting_owners(live, background=True))
    return [seq] if seq is not None else []


def victim(running: Sequence[Seq], waiting: set[str]) -> Seq | None:
    """Who gives up a slot for an owner waiting with none (every slot busy): the owner holding
    the most (at least two) gives its generating sequence with the shortest context. (The
    scheduler asks within one class: interactive sequences for interactive owners, batch lines
    for batch owners.)"""
    if not running:
        return None
    holders = Counter(seq.job.gen.owner for seq in running)
    if all(owner in holders for owner in waiting):
        return None
    owner, held = holders.most_common(1)[0]
    if held < 2:
        return None
    victims = [
        s for s in running if s.job.gen.owner == owner and s.next is not None and not s.followers
    ]
    return min(victims, key=lambda s: len(s.prompt) + s.produced) if victims else None


def yielding(running: Sequence[Seq], wanted: int) -> list[Seq]:
    """Batch lines that give up their slots to `wanted` waiting interactive jobs: those whose
    resume costs least (fewest cells to evaluate again should their slot be taken). A choice
    leading or following another (they share a prompt's cells) or scoring its prompt stays."""
    batch = [
        seq
        for seq in running
        if seq.job.gen.background and seq.leader is None and not seq.followers and not seq.scoring
    ]
    batch.sort(key=lambda seq: len(seq.slot.cells))
    return batch[:wanted]

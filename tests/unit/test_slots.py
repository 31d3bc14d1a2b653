"""The prefix cache's plan: the longest cached prefix of the same owner, a copy of a busy slot's
cells of the same owner — and nothing of another owner's, whose slots count as empty."""

from __future__ import annotations

from tokendock.inference.engine.slots import MIN_COPY, Slot, plan

SYSTEM = list(range(100, 200))  # a 100-token system prompt
PROMPT = [*SYSTEM, 7, 8, 9]


def slot(seq: int, owner: str, cells: list[int], *, busy: bool = False, used: int = 0) -> Slot:
    return Slot(seq, list(cells), busy=busy, used=used, owner=owner)


def test_an_owner_reuses_its_own_cells() -> None:
    slots = [slot(0, "a", SYSTEM, used=5), slot(1, "", [], used=1)]
    where = plan(slots, PROMPT, owner="a", tail=8)
    assert where is not None
    assert (where.slot.seq, where.keep, where.source) == (0, 95, None)  # 8 left to evaluate


def test_another_owners_cells_are_never_matched() -> None:
    # b's prompt is a's cached prompt exactly: b gets no cells, and the slot it takes is the
    # least recently used one — the same choice as if a's cells held anything else.
    slots = [slot(0, "a", SYSTEM, used=5), slot(1, "c", [1, 2, 3], used=1)]
    where = plan(slots, PROMPT, owner="b", tail=8)
    assert where is not None
    assert (where.slot.seq, where.keep, where.source) == (1, 0, None)
    other = [slot(0, "a", [9] * 100, used=5), slot(1, "c", [1, 2, 3], used=1)]
    unrelated = plan(other, PROMPT, owner="b", tail=8)
    assert unrelated is not None and unrelated.slot.seq == where.slot.seq


def test_a_busy_slot_is_copied_only_for_its_owner() -> None:
    slots = [slot(0, "a", SYSTEM, busy=True), slot(1, "a", [], used=2), slot(2, "b", [], used=1)]
    mine = plan(slots, PROMPT, owner="a", tail=8)
    assert mine is not None and mine.source is slots[0] and mine.keep == 95 >= MIN_COPY
    theirs = plan(slots, PROMPT, owner="b", tail=8)
    assert theirs is not None and theirs.source is None and theirs.keep == 0


def test_no_reuse_takes_the_least_recently_used() -> None:
    slots = [slot(0, "a", SYSTEM, used=5), slot(1, "a", [], used=3)]
    where = plan(slots, PROMPT, owner="a", reuse=False)
    assert where is not None and (where.slot.seq, where.keep) == (1, 0)
    assert plan([slot(0, "a", [], busy=True)], PROMPT, owner="a") is None


def test_without_a_useful_prefix_running_sequences_stay_together() -> None:
    # Busy 0, 1 and 3: slot 2 joins them into one run of sequence ids (one forward pass a
    # step), though slot 5 is empty and slot 4 least recently used.
    slots = [
        slot(0, "a", [1], busy=True),
        slot(1, "a", [1], busy=True),
        slot(2, "b", [5, 6], used=9),
        slot(3, "a", [1], busy=True),
        slot(4, "b", [5, 6], used=1),
        slot(5, "", []),
    ]
    where = plan(slots, PROMPT, owner="a", tail=8)
    assert where is not None and where.slot.seq == 2
    short = plan(slots, [1, 2, 3], owner="a", tail=8)  # too short to reuse anything
    assert short is not None and short.slot.seq == 2


def test_a_useful_prefix_still_wins_over_keeping_together() -> None:
    slots = [
        slot(0, "a", [1], busy=True),
        slot(1, "b", [], used=0),
        slot(2, "a", SYSTEM, used=3),
    ]
    where = plan(slots, PROMPT, owner="a", tail=8)
    assert where is not None
    assert (where.slot.seq, where.keep) == (2, len(SYSTEM) - 5)
    assert where.keep >= MIN_COPY

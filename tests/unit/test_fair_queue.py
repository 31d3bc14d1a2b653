from __future__ import annotations

import threading

from tokendock.inference.fair_queue import MAX_REMEMBERED, FairQueue


def drain(q: FairQueue[str]) -> list[str]:
    out: list[str] = []
    while len(q):
        item = q.get()
        assert item is not None
        out.append(item)
    return out


def test_one_owner_is_first_come_first_served() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.put("a", f"a{i}")
    assert drain(q) == ["a0", "a1", "a2", "a3", "a4"]


def test_a_late_single_job_overtakes_a_big_backlog() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(100):
        q.put("a", f"a{i}")
    assert q.get() == "a0"  # the worker is busy with a0 when b arrives
    q.put("b", "b0")
    assert q.get() == "b0"
    assert q.get() == "a1"


def test_owners_alternate_round_robin() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.put("a", f"a{i}")
    for i in range(3):
        q.put("b", f"b{i}")
    q.put("c", "c0")
    assert drain(q) == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_the_owner_served_least_recently_goes_next() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0")
    q.put("b", "b0")
    assert q.get() == "a0"
    assert q.get() == "b0"
    # both have been served; now a (served longer ago) waits beside b
    q.put("b", "b1")
    q.put("a", "a1")
    assert q.get() == "a1"
    assert q.get() == "b1"


def test_skipped_items_are_dropped_without_using_the_owners_turn() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0-cancelled")
    q.put("a", "a1")
    q.put("b", "b0")
    assert q.get(skip=lambda item: item.endswith("cancelled")) == "a1"
    assert q.get() == "b0"
    assert len(q) == 0


def test_get_blocks_until_an_item_arrives_and_close_wakes_consumers() -> None:
    q: FairQueue[str] = FairQueue()
    got: list[str | None] = []
    took_one = threading.Event()

    def consume() -> None:
        got.append(q.get())
        took_one.set()
        got.append(q.get())

    consumer = threading.Thread(target=consume)
    consumer.start()
    q.put("a", "a0")
    assert took_one.wait(5)
    assert q.close() == []
    consumer.join(5)
    assert not consumer.is_alive()
    assert got == ["a0", None]


def test_close_hands_back_what_nobody_will_take() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0")
    q.put("b", "b0")
    assert sorted(q.close()) == ["a0", "b0"]
    assert q.get() is None


def test_a_stream_of_newcomers_cannot_starve_a_waiting_owner() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("busy", "x0")
    q.put("busy", "x1")
    assert q.get() == "x0"
    q.put("new0", "n0")
    assert q.get() == "n0"  # joined ahead of busy, which had just been served
    q.put("new1", "n1")
    assert q.get() == "x1"  # new1 queues behind busy, which waited longer


def test_idle_owners_are_forgotten_past_the_bound() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(MAX_REMEMBERED + 10):
        q.put(f"o{i}", "once")
        assert q.get() == "once"
    assert len(q._lanes[0].served) <= MAX_REMEMBERED
    q.put("o1", "again")
    q.put("late", "late0")
    assert drain(q) == ["again", "late0"]


def test_nothing_is_queued_once_closed() -> None:
    q: FairQueue[str] = FairQueue()
    q.close()
    assert q.put("a", "a0") is False
    assert len(q) == 0


def test_others_waiting_counts_only_live_items_of_other_owners() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0")
    assert not q.others_waiting("a")
    q.put("b", "b0-cancelled")
    assert q.others_waiting("a")
    assert not q.others_waiting("a", live=lambda item: not item.endswith("cancelled"))


def test_count_is_per_owner_and_remove_frees_at_once() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.put("a", f"a{i}")
    q.put("b", "b0")
    assert (q.count("a"), q.count("b"), q.count("c")) == (3, 1, 0)
    assert q.remove("a", "a1")
    assert not q.remove("a", "a1")  # already gone
    assert not q.remove("c", "a0")  # not that owner's
    assert q.count("a") == 2 and len(q) == 3
    assert q.remove("b", "b0")
    assert q.count("b") == 0 and q.waiting_owners() == {"a"}
    assert drain(q) == ["a0", "a2"]  # the removed one is never served


def test_an_owner_removed_entirely_leaves_the_ring() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0")
    q.put("b", "b0")
    assert q.remove("a", "a0")
    assert q.get(block=False) == "b0"
    assert q.get(block=False) is None


# -- the background lane (batch lines, issue 21) ---------------------------------------------


def test_any_interactive_item_goes_before_any_background_one() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.put("a", f"batch-a{i}", background=True)
    q.put("b", "b0")
    assert q.get() == "b0"  # queued after the batch lines, served first
    q.put("a", "a0")
    assert q.get() == "a0"
    assert q.get() == "batch-a0"
    q.put("c", "c0")  # a newcomer overtakes the rest of the background backlog
    assert drain(q) == ["c0", "batch-a1", "batch-a2"]


def test_background_owners_take_turns_among_themselves() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.put("a", f"a{i}", background=True)
    q.put("b", "b0", background=True)
    q.put("b", "b1", background=True)
    assert drain(q) == ["a0", "b0", "a1", "b1", "a2"]


def test_a_background_item_put_back_in_front_keeps_its_place_in_its_lane() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0", background=True)
    q.put("a", "a1", background=True)
    first = q.get()
    assert first == "a0"
    q.put("x", "x0")
    q.put("a", first, front=True, background=True)  # preempted: back before a's others
    assert drain(q) == ["x0", "a0", "a1"]


def test_background_items_are_not_counted_by_the_interactive_bounds() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(200):
        q.put("a", f"batch{i}", background=True)
    q.put("a", "live")
    assert q.count("a") == 1 and q.interactive() == 1
    assert q.waiting() == 1 and q.waiting(background=True) == 200
    assert len(q) == 201
    assert q.waiting_owners() == {"a"} and q.waiting_owners(background=True) == {"a"}
    assert q.remove("a", "batch7")  # found in its lane
    assert q.waiting(background=True) == 199
    assert q.get() == "live"
    assert q.waiting_owners() == set() and q.count("a") == 0


def test_waiting_in_a_lane_reads_only_live_items() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "a0-cancelled")
    q.put("b", "b0-cancelled", background=True)
    q.put("c", "c0", background=True)

    def live(item: str) -> bool:
        return not item.endswith("cancelled")

    assert q.waiting(live) == 0 and q.waiting_owners(live) == set()
    assert q.waiting(live, background=True) == 1
    assert q.waiting_owners(live, background=True) == {"c"}


def test_close_returns_both_lanes_items() -> None:
    q: FairQueue[str] = FairQueue()
    q.put("a", "batch", background=True)
    q.put("a", "live")
    assert q.close() == ["live", "batch"]
    assert q.get() is None and len(q) == 0

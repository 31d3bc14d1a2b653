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
    assert len(q._served) <= MAX_REMEMBERED
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

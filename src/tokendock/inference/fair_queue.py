"""A blocking queue that is fair between owners: round robin, not first come first served.

Each owner (an account, for the engine) has its own FIFO of items. `get` serves the owner with
pending items that was served least recently. An owner that starts waiting takes its remembered
last turn, or, when it has none, a turn just before the most recent one: it joins the tail of
the ring, ahead of the owner being served but behind everyone already waiting, so a stream of
newcomers cannot starve anyone either. One owner's hundred queued jobs delay another owner's
single job by at most the one job already running.

Two lanes: interactive items (the default) and background ones (batch lines, issue 21). `get`
returns any interactive item before any background one; within each lane owners take turns as
above. Background items are not counted by `count` / `waiting` (the interactive wait bounds):
whoever queues them bounds them (the batch runner's lines in flight), so a thousand queued
batch lines never make an interactive request look over a bound.

Thread-safe: producers on the event loop, one or more consumer threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Past this many remembered owners, idle owners' last turns are forgotten.
MAX_REMEMBERED = 4096


def _always(item: object) -> bool:
    return True


class _Lane(Generic[T]):
    """One lane's owners, their FIFOs and their turns (guarded by the queue's lock)."""

    def __init__(self) -> None:
        self.pending: dict[str, deque[T]] = {}  # owners with items
        self.turn: dict[str, tuple[int, int]] = {}  # pending owner → (last turn, arrival)
        self.served: dict[str, int] = {}  # owner → tick of its last turn

    def remove(self, owner: str, item: T) -> bool:
        items = self.pending.get(owner)
        if items is None:
            return False
        try:
            items.remove(item)
        except ValueError:
            return False
        if not items:
            del self.pending[owner], self.turn[owner]
        return True

    def owners(self, live: Callable[[T], bool]) -> set[str]:
        return {o for o, items in self.pending.items() if any(live(i) for i in items)}

    def size(self) -> int:
        return sum(len(items) for items in self.pending.values())


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lanes: tuple[_Lane[T], _Lane[T]] = (_Lane(), _Lane())  # interactive, background
        self._tick = 0  # ticks of turns are even; a newcomer's turn is "just before the last"
        self._closed = False

    def put(self, owner: str, item: T, *, front: bool = False, background: bool = False) -> bool:
        """Queue `item` behind the owner's others in its lane (`front`: before them — a job
        that comes back after a slice keeps its place among its owner's jobs). False once
        closed: not queued."""
        with self._cond:
            if self._closed:
                return False
            lane = self._lanes[background]
            items = lane.pending.get(owner)
            if items is None:
                items = lane.pending[owner] = deque()
                last = lane.served.get(owner, self._tick - 1)
                lane.turn[owner] = (last, self._next_tick())
            if front:
                items.appendleft(item)
            else:
                items.append(item)
            self._cond.notify()
            return True

    def others_waiting(self, owner: str, live: Callable[[T], bool] = _always) -> bool:
        """Whether an owner other than `owner` has a `live` item queued (either lane)."""
        with self._cond:
            return any(
                other != owner and any(live(item) for item in items)
                for lane in self._lanes
                for other, items in lane.pending.items()
            )

    def count(self, owner: str) -> int:
        """Interactive items `owner` has queued (the per-owner wait bound reads this)."""
        with self._cond:
            items = self._lanes[0].pending.get(owner)
            return len(items) if items is not None else 0

    def waiting(self, live: Callable[[T], bool] = _always, *, background: bool = False) -> int:
        """`live` items queued in one lane (interactive by default)."""
        with self._cond:
            lane = self._lanes[background]
            return sum(1 for items in lane.pending.values() for item in items if live(item))

    def remove(self, owner: str, item: T) -> bool:
        """Take `item` out of the queue now (its request went away): it stops counting against
        the bounds at once instead of when a consumer would have skipped it. False if it was
        not queued (already taken)."""
        with self._cond:
            return any(lane.remove(owner, item) for lane in self._lanes)

    def waiting_owners(
        self, live: Callable[[T], bool] = _always, *, background: bool = False
    ) -> set[str]:
        """The owners with a `live` item queued in one lane (interactive by default)."""
        with self._cond:
            return self._lanes[background].owners(live)

    def close(self) -> list[T]:
        """Wake every consumer; `get` returns None from now on. Returns the items still pending
        (interactive first), which nobody will take."""
        with self._cond:
            self._closed = True
            dropped = [
                item for lane in self._lanes for items in lane.pending.values() for item in items
            ]
            for lane in self._lanes:
                lane.pending.clear()
                lane.turn.clear()
            self._cond.notify_all()
            return dropped

    def __len__(self) -> int:
        """Items queued in both lanes."""
        with self._cond:
            return sum(lane.size() for lane in self._lanes)

    def interactive(self) -> int:
        """Items queued in the interactive lane."""
        with self._cond:
            return self._lanes[0].size()

    @property
    def closed(self) -> bool:
        return self._closed

    def get(
        self, skip: Callable[[T], bool] = lambda item: False, *, block: bool = True
    ) -> T | None:
        """The next item: interactive before background, round robin between owners within a
        lane; blocks while empty (`block=False`: None at once); None once closed. Items for
        which `skip` is true (e.g. cancelled while queued) are dropped without using their
        owner's turn."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                item = self._take(self._lanes[0], skip)
                if item is None:
                    item = self._take(self._lanes[1], skip)
                if item is not None or not block:
                    return item
                self._cond.wait()

    def _next_tick(self) -> int:
        self._tick += 2
        return self._tick

    def _take(self, lane: _Lane[T], skip: Callable[[T], bool]) -> T | None:
        pending, turn = lane.pending, lane.turn
        while pending:
            owner = min(turn, key=turn.__getitem__)
            items = pending[owner]
            item = items.popleft()
            if skip(item):
                if not items:
                    del pending[owner], turn[owner]
                continue
            tick = lane.served[owner] = self._next_tick()
            if items:
                turn[owner] = (tick, turn[owner][1])
            else:
                del pending[owner], turn[owner]
            if len(lane.served) > MAX_REMEMBERED:
                # Forget idle owners: when they come back they queue as newcomers do.
                lane.served = {o: t for o, t in lane.served.items() if o in pending}
            return item
        return None

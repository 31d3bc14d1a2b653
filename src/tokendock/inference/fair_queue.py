"""A blocking queue that is fair between owners: round robin, not first come first served.

Each owner (an account, for the engine) has its own FIFO of items. `get` serves the owner with
pending items that was served least recently. An owner that starts waiting takes its remembered
last turn, or, when it has none, a turn just before the most recent one: it joins the tail of
the ring, ahead of the owner being served but behind everyone already waiting, so a stream of
newcomers cannot starve anyone either. One owner's hundred queued jobs delay another owner's
single job by at most the one job already running.

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


class FairQueue(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, deque[T]] = {}  # owners with items
        self._turn: dict[str, tuple[int, int]] = {}  # pending owner → (last turn, arrival)
        self._served: dict[str, int] = {}  # owner → tick of its last turn
        self._tick = 0  # ticks of turns are even; a newcomer's turn is "just before the last"
        self._closed = False

    def put(self, owner: str, item: T, *, front: bool = False) -> bool:
        """Queue `item` behind the owner's others (`front`: before them — a job that comes back
        after a slice keeps its place among its owner's jobs). False once closed: not queued."""
        with self._cond:
            if self._closed:
                return False
            items = self._pending.get(owner)
            if items is None:
                items = self._pending[owner] = deque()
                last = self._served.get(owner, self._tick - 1)
                self._turn[owner] = (last, self._next_tick())
            if front:
                items.appendleft(item)
            else:
                items.append(item)
            self._cond.notify()
            return True

    def others_waiting(self, owner: str, live: Callable[[T], bool] = lambda item: True) -> bool:
        """Whether an owner other than `owner` has a `live` item queued."""
        with self._cond:
            return any(
                other != owner and any(live(item) for item in items)
                for other, items in self._pending.items()
            )

    def count(self, owner: str) -> int:
        """Items `owner` has queued (the per-owner wait bound reads this)."""
        with self._cond:
            items = self._pending.get(owner)
            return len(items) if items is not None else 0

    def remove(self, owner: str, item: T) -> bool:
        """Take `item` out of the queue now (its request went away): it stops counting against
        the bounds at once instead of when a consumer would have skipped it. False if it was
        not queued (already taken)."""
        with self._cond:
            items = self._pending.get(owner)
            if items is None:
                return False
            try:
                items.remove(item)
            except ValueError:
                return False
            if not items:
                del self._pending[owner], self._turn[owner]
            return True

    def waiting_owners(self, live: Callable[[T], bool] = lambda item: True) -> set[str]:
        """The owners with a `live` item queued."""
        with self._cond:
            return {o for o, items in self._pending.items() if any(live(i) for i in items)}

    def close(self) -> list[T]:
        """Wake every consumer; `get` returns None from now on. Returns the items still pending,
        which nobody will take."""
        with self._cond:
            self._closed = True
            dropped = [item for items in self._pending.values() for item in items]
            self._pending.clear()
            self._turn.clear()
            self._cond.notify_all()
            return dropped

    def __len__(self) -> int:
        with self._cond:
            return sum(len(items) for items in self._pending.values())

    @property
    def closed(self) -> bool:
        return self._closed

    def get(
        self, skip: Callable[[T], bool] = lambda item: False, *, block: bool = True
    ) -> T | None:
        """The next item by round robin; blocks while empty (`block=False`: None at once);
        None once closed. Items for which `skip` is true (e.g. cancelled while queued) are
        dropped without using their owner's turn."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                item = self._take(skip)
                if item is not None or not block:
                    return item
                self._cond.wait()

    def _next_tick(self) -> int:
        self._tick += 2
        return self._tick

    def _take(self, skip: Callable[[T], bool]) -> T | None:
        while self._pending:
            owner = min(self._turn, key=self._turn.__getitem__)
            items = self._pending[owner]
            item = items.popleft()
            if skip(item):
                if not items:
                    del self._pending[owner], self._turn[owner]
                continue
            tick = self._served[owner] = self._next_tick()
            if items:
                self._turn[owner] = (tick, self._turn[owner][1])
            else:
                del self._pending[owner], self._turn[owner]
            if len(self._served) > MAX_REMEMBERED:
                # Forget idle owners: when they come back they queue as newcomers do.
                self._served = {o: t for o, t in self._served.items() if o in self._pending}
            return item
        return None

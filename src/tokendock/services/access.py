"""Every replica follows the changes of who may run work — an account disabled or deleted, a
key revoked (`access_events`, written with the change in one transaction) — and ends the running
work they cover in this process (services/running.py) and drops its key cache.

Replicas share the database, so that is the channel: each process reads the events past the
last id it has seen every `every` seconds (default 0.5 s: within a second everywhere) — one
primary-key range read — and at once when this process made the change (`wake`). Ids are taken
from a sequence when a row is inserted, so a transaction may commit a smaller id after a larger
one was read: each read looks `OVERLAP` ids back and skips the ids already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from tokendock.services.running import AccessChange, Running
from tokendock.storage.access import AccessEventStore

log = logging.getLogger(__name__)

EVERY_SECONDS = 0.5
OVERLAP = 64  # ids read again, for transactions that committed out of id order


class AccessWatch:
    def __init__(
        self,
        store: AccessEventStore,
        running: Running,
        forget_keys: Callable[[], None],
        *,
        every: float = EVERY_SECONDS,
    ):
        self._store = store
        self._running = running
        self._forget_keys = forget_keys
        self._every = every
        self._last = 0  # the newest id applied
        self._applied: set[int] = set()  # ids applied within OVERLAP of `_last`
        self._wake = asyncio.Event()

    async def start(self) -> None:
        """Begin at the newest change: what came before concerns no call of this process."""
        self._last = await self._store.latest()
        before = await self._store.since(max(self._last - OVERLAP, 0))
        self._applied = {e.id for e in before if e.id <= self._last}

    def wake(self) -> None:
        """This process just made a change: read now rather than at the next tick."""
        self._wake.set()

    async def follow(self) -> None:
        """Forever: read and apply new changes (a failed read is tried again next tick)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every)
            self._wake.clear()
            try:
                await self.poll()
            except Exception as exc:
                log.warning("reading access changes failed (%s); retrying", exc)

    async def poll(self) -> int:
        """Apply the changes not applied yet; how many calls they ended."""
        events = await self._store.since(max(self._last - OVERLAP, 0))
        fresh = [e for e in events if e.id not in self._applied]
        if not fresh:
            return 0
        self._forget_keys()  # a key cached as live may be revoked, or its account disabled
        ended = 0
        for e in fresh:
            ended += self._running.end(AccessChange(e.account_id, e.key_id, e.reason))
            self._applied.add(e.id)
            self._last = max(self._last, e.id)
        floor = self._last - OVERLAP
        self._applied = {i for i in self._applied if i > floor}
        if ended:
            log.info("access changes ended %d running request(s)", ended)
        return ended

"""One run's events from the engine thread to the event loop: one queue per run, not per choice.

Every job of a request (its prompts × n choices) puts `(choice, event)` pairs into the run's
one `Inbox`, in the order the engine made them; one consumer on the event loop takes them
(llama.cpp's own server reads all of a request's results from one queue the same way). No task
per choice, no second queue to merge them: a token's event goes from the worker thread straight
to the coroutine that shapes it.

The worker wakes the loop only when the consumer is waiting for more: one
`call_soon_threadsafe` per wait, not per event, so the n choices of one step (or tokens that
came while the consumer was busy writing) cost one wake-up and are taken in one batch.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import TypeAlias

from tokendock.errors import GenerationFailed, TokenDockError
from tokendock.inference.engine.base import Event

Arrival: TypeAlias = Event | BaseException  # an engine event, or the error that ended a job
Item: TypeAlias = tuple[int, Arrival]  # (choice index in the run, what came)


class Inbox:
    """Events of one run's jobs, tagged by choice, read by one consumer on `loop`."""

    __slots__ = ("_items", "_lock", "_waiter", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._items: collections.deque[Item] = collections.deque()
        self._lock = threading.Lock()  # the consumer's "empty, so I wait" against a put
        self._waiter: asyncio.Future[None] | None = None

    def put(self, choice: int, item: Arrival) -> bool:
        """Any thread: queue `item` for choice `choice`; wake the consumer if it waits. False
        when the event loop is closed (shutdown: nobody will ever read it)."""
        with self._lock:
            self._items.append((choice, item))
            waiter, self._waiter = self._waiter, None
        if waiter is None:
            return not self.loop.is_closed()
        try:
            self.loop.call_soon_threadsafe(_wake, waiter)
        except RuntimeError:  # the loop closed under us
            return False
        return True

    async def take(self) -> list[Item]:
        """Event loop: everything queued so far, in order (waits while there is nothing)."""
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    return items
                waiter = self._waiter = self.loop.create_future()
            await waiter


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # (a consumer cancelled while it waited has left it cancelled)
        waiter.set_result(None)


def raised(error: BaseException) -> BaseException:
    """What a job's error becomes for the caller: a TokenDockError already says what the client
    is told; anything else is a generation failure (a 500), chained to its cause."""
    if isinstance(error, TokenDockError):
        return error
    failed = GenerationFailed(f"Generation failed: {error}")
    failed.__cause__ = error
    return failed

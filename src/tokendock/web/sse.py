"""An SSE response that stops its producer the moment the client goes away.

Two tasks race: one sends events (with `: ping` comments when the producer is quiet for
`keepalive` seconds), one waits for `http.disconnect`. Whichever ends first cancels the other, so
a vanished client closes the event iterator — and through it the generation — at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokendock.protocol.sse import PING


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        keepalive: float,
        headers: dict[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ):
        # Headers are set by hand: Response.__init__ would add `content-length: 0`.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
        ]
        self._events = events
        self._keepalive = keepalive
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        producer = asyncio.create_task(self._produce(send))
        watcher = asyncio.create_task(wait_for_disconnect(receive))
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                task.cancel()
            for task in (producer, watcher):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
            # An event generator that never started ignores aclose(): `on_close` still cleans
            # up (settles the request) when the client left before the first event.
            if self._on_close is not None:
                await self._on_close()

    async def _produce(self, send: Send) -> None:
        # Events are sent as they come; a side task sends `: ping` when none came for
        # `keepalive` seconds. One lock keeps their writes whole; nothing is spent per event
        # but a clock read (a task or a wait per event would be the relay's largest cost).
        loop = asyncio.get_running_loop()
        lock = asyncio.Lock()
        last = loop.time()

        async def ping() -> None:
            nonlocal last
            while True:
                await asyncio.sleep(last + self._keepalive - loop.time())
                if loop.time() - last >= self._keepalive:
                    async with lock:
                        await send({"type": "http.response.body", "body": PING, "more_body": True})
                    last = loop.time()

        pinger = asyncio.create_task(ping())
        try:
            async for chunk in self._events:
                async with lock:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                last = loop.time()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger


async def wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass

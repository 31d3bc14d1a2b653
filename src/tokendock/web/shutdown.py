"""Graceful shutdown: on SIGTERM (or Ctrl-C) requests in flight get `grace` seconds to finish;
then each one still open is ended the way a vanished client ends it, and told why.

uvicorn, on the signal, stops accepting connections and waits for the open ones (its own,
later deadline is the backstop: cli.py). `Shutdown.watch_signals` chains onto uvicorn's signal
handler so the application learns of the signal too. From then on:

- a request that arrives anyway (a pipelined or racing one) gets a 503 envelope at once;
- at the deadline every open request reads `http.disconnect` from `receive`: the endpoint's own
  disconnect path stops generation and settles the hold for what was produced (the tested path
  of a client that went away);
- instead of nothing, the client then gets a 503 `server_shutting_down` envelope (its response
  had not started) or, on a stream, `data: {"error": …}` and `data: [DONE]`.

On Anthropic's Messages API routes (`/v1/messages…`) both are Anthropic's: its envelope with
status 529 `overloaded_error` (web/responses.py `for_path`), and on a stream its `event: error`
(its streams have no `[DONE]`).

The wrapper costs a request one small object and two indirect calls; nothing per stream event
but a reference to the last body sent.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokendock.errors import ServiceUnavailable
from tokendock.protocol import messages
from tokendock.protocol.errors import envelope
from tokendock.protocol.sse import DONE, event
from tokendock.web.responses import anthropic_path, for_path

log = logging.getLogger(__name__)

DISCONNECT: Message = {"type": "http.disconnect"}
CLIENT_GONE = 499  # what an endpoint answers after `http.disconnect` (nobody reads it)


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The server is shutting down; the request was ended (tokens generated before that "
        "were billed). Retry it.",
        code="server_shutting_down",
    )


class Shutdown:
    """The process's shutdown state: begun (signal received), then ended (deadline passed)."""

    def __init__(self, grace: float):
        self.grace = grace
        self.begun = False
        self.ended = False
        self.open: set[Exchange] = set()

    def begin(self) -> None:
        if self.begun:
            return
        self.begun = True
        log.info(
            "shutting down: %d request(s) in flight get %g s to finish", len(self.open), self.grace
        )
        asyncio.get_running_loop().call_later(self.grace, self.end)

    def end(self) -> None:
        self.ended = True
        if self.open:
            log.warning("shutdown deadline: ending %d request(s) still in flight", len(self.open))
        for exchange in list(self.open):
            exchange.cut()

    def watch_signals(self) -> Callable[[], None]:
        """Chain SIGTERM / SIGINT onto the server's handlers (uvicorn's); returns the undo.
        Only where a server installed one, in the main thread (signals live there)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            chained = signal.getsignal(sig)
            if not callable(chained):
                continue

            def handler(signum: int, frame: FrameType | None, chained: Any = chained) -> None:
                loop.call_soon_threadsafe(self.begin)
                chained(signum, frame)

            previous[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


class Exchange:
    """One request in flight: can be cut (told its client is gone) and then answered."""

    __slots__ = (
        "_path",
        "_receive",
        "_send",
        "_waiter",
        "complete",
        "cut_off",
        "last",
        "replaced",
        "sse",
        "started",
    )

    def __init__(self, receive: Receive, send: Send, path: str):
        self._path = path
        self._receive = receive
        self._send = send
        self._waiter: asyncio.Task[Any] | None = None
        self.cut_off = False
        self.started = False
        self.replaced = False
        self.sse = False
        self.complete = False
        self.last = b""  # the last body sent

    def cut(self) -> None:
        self.cut_off = True
        if self._waiter is not None:
            self._waiter.cancel()  # wakes the task blocked in receive(); it reads a disconnect

    async def receive(self) -> Message:
        if self.cut_off:
            return DISCONNECT
        task = asyncio.current_task()
        self._waiter = task
        try:
            return await self._receive()
        except asyncio.CancelledError:
            if self.cut_off and task is not None and task.uncancel() == 0:
                return DISCONNECT
            raise
        finally:
            self._waiter = None

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if self.cut_off and message["status"] == CLIENT_GONE:
                self.replaced = True
                await _send_error(self._send, self._path)
                return
            self.started = True
            self.sse = any(
                k == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in message.get("headers", ())
            )
        elif self.replaced:
            return
        elif message["type"] == "http.response.body":
            if message.get("more_body", False):
                self.last = message.get("body", b"")
            else:
                self.complete = True
        await self._send(message)

    async def finish(self) -> None:
        """After a cut: answer what the endpoint left unanswered."""
        if self.replaced or self.complete:
            return
        if not self.started:
            await _send_error(self._send, self._path)
        elif self.sse:
            tail = b"" if _ended(self.last) else _error_event(self._path)
            await self._send({"type": "http.response.body", "body": tail, "more_body": False})


class ShutdownMiddleware:
    def __init__(self, app: ASGIApp, *, shutdown: Shutdown):
        self.app = app
        self.shutdown = shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.shutdown
        if state.begun:
            await _send_error(send, scope["path"])
            return
        exchange = Exchange(receive, send, scope["path"])
        state.open.add(exchange)
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not exchange.cut_off or exchange.started or exchange.replaced:
                raise
        finally:
            state.open.discard(exchange)
        if exchange.cut_off:
            await exchange.finish()


def _ended(last: bytes) -> bool:
    """The stream's last body ended it: OpenAI's `[DONE]`, Anthropic's last event or error."""
    return last.endswith(DONE) or last.startswith((b"event: message_stop", b"event: error"))


def _error_event(path: str) -> bytes:
    if anthropic_path(path):
        return messages.sse(messages.error_envelope(shutting_down()))
    return event(envelope(shutting_down())) + DONE


async def _send_error(send: Send, path: str) -> None:
    body, status = for_path(shutting_down(), path)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

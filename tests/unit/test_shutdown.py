"""The shutdown middleware driven as plain ASGI: a request after the signal is refused, and at
the deadline open requests read `http.disconnect`, then get a 503 or an SSE error event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from tokendock.protocol.sse import DONE
from tokendock.web.shutdown import Shutdown, ShutdownMiddleware
from tokendock.web.sse import EventStreamResponse

SCOPE: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Client:
    """The server side of one connection: a receive that blocks, and what was sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


async def waits_for_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
    """Like cancel_on_disconnect: the work is abandoned when the client goes; answers 499."""
    while (await receive())["type"] != "http.disconnect":
        pass
    await Response(status_code=499)(scope, receive, send)


async def answers(scope: Scope, receive: Receive, send: Send) -> None:
    await Response(b"done", status_code=200)(scope, receive, send)


def code(body: bytes) -> Any:
    return orjson.loads(body)["error"]["code"]


async def run(app: Any, shutdown: Shutdown) -> tuple[Client, asyncio.Task[None]]:
    client = Client()
    task = asyncio.ensure_future(
        ShutdownMiddleware(app, shutdown=shutdown)(SCOPE, client.receive, client.send)
    )
    await asyncio.sleep(0.01)
    return client, task


async def test_requests_after_the_signal_get_503() -> None:
    shutdown = Shutdown(grace=30)
    shutdown.begin()
    client, task = await run(answers, shutdown)
    await task
    assert client.status == 503 and code(client.body) == "server_shutting_down"


async def test_at_the_deadline_a_waiting_request_is_cut_and_gets_503() -> None:
    shutdown = Shutdown(grace=0.05)
    client, task = await run(waits_for_disconnect, shutdown)
    shutdown.begin()
    await asyncio.wait_for(task, 2)  # its receive() returned http.disconnect
    assert client.status == 503 and code(client.body) == "server_shutting_down"
    assert not shutdown.open


async def test_a_request_that_finishes_within_the_grace_period_is_untouched() -> None:
    go = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        await go.wait()
        await answers(scope, receive, send)

    shutdown = Shutdown(grace=30)
    client, task = await run(slow, shutdown)
    shutdown.begin()  # after the request arrived
    go.set()
    await asyncio.wait_for(task, 2)
    assert client.status == 200 and client.body == b"done"


async def test_a_stream_at_the_deadline_ends_with_an_error_event_and_done() -> None:
    closed = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b'data: {"n": 1}\n\n'
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            closed.set()  # the producer was stopped: the request settles

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await EventStreamResponse(events(), keepalive=60)(scope, receive, send)

    shutdown = Shutdown(grace=0.05)
    client, task = await run(app, shutdown)
    shutdown.begin()
    await asyncio.wait_for(task, 2)
    assert closed.is_set()
    assert client.status == 200
    assert client.sent[-1]["more_body"] is False
    data = [p for p in client.body.split(b"\n\n") if p]
    assert data[0] == b'data: {"n": 1}'
    assert code(data[1].removeprefix(b"data: ")) == "server_shutting_down"
    assert data[2] + b"\n\n" == DONE


async def test_a_cancel_from_elsewhere_is_not_taken_for_a_disconnect() -> None:
    shutdown = Shutdown(grace=30)
    client, task = await run(waits_for_disconnect, shutdown)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.sent == []


MESSAGES_SCOPE: Scope = {**SCOPE, "path": "/v1/messages"}


async def on_messages(app: Any, shutdown: Shutdown) -> tuple[Client, asyncio.Task[None]]:
    client = Client()
    middleware = ShutdownMiddleware(app, shutdown=shutdown)
    task = asyncio.ensure_future(middleware(MESSAGES_SCOPE, client.receive, client.send))
    await asyncio.sleep(0.01)
    return client, task


def anthropic(body: bytes) -> Any:
    parsed = orjson.loads(body)
    assert parsed["type"] == "error" and set(parsed["error"]) == {"type", "message"}, parsed
    return parsed["error"]["type"]


async def test_on_the_messages_api_a_late_request_gets_anthropics_envelope() -> None:
    shutdown = Shutdown(grace=30)
    shutdown.begin()
    client, task = await on_messages(answers, shutdown)
    await task
    assert client.status == 529 and anthropic(client.body) == "overloaded_error"
    chat, task = await run(answers, shutdown)  # the OpenAI routes keep OpenAI's
    await task
    assert chat.status == 503 and code(chat.body) == "server_shutting_down"


async def test_on_the_messages_api_the_deadline_answers_in_anthropics_envelope() -> None:
    shutdown = Shutdown(grace=0.05)
    client, task = await on_messages(waits_for_disconnect, shutdown)
    shutdown.begin()
    await asyncio.wait_for(task, 2)
    assert client.status == 529 and anthropic(client.body) == "overloaded_error"


async def test_a_messages_stream_at_the_deadline_ends_with_anthropics_error_event() -> None:
    async def events() -> AsyncIterator[bytes]:
        yield b'event: ping\ndata: {"type": "ping"}\n\n'
        await asyncio.sleep(3600)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await EventStreamResponse(events(), keepalive=60)(scope, receive, send)

    shutdown = Shutdown(grace=0.05)
    client, task = await on_messages(app, shutdown)
    shutdown.begin()
    await asyncio.wait_for(task, 2)
    assert client.status == 200 and client.sent[-1]["more_body"] is False
    last = [p for p in client.body.split(b"\n\n") if p][-1]
    name, data = last.split(b"\n")
    assert name == b"event: error" and anthropic(data.removeprefix(b"data: ")) == "overloaded_error"
    assert DONE not in client.body

"""Pass-through answers: the pipeline's call for an opaque request, and its bytes relayed to the
client as the upstream sends them (status 200, the upstream's content type).

    return await relay(request, deps, key, req, watch=True)

`watch`: the request's body was read already, so the client going away can be watched for
(`http.disconnect`) while the upstream works, and cancels the call; a live body (a multipart
upload streamed straight upstream) is still being read by the call itself, which sees the
client leave as its body failing (`ClientLeft`). Errors before the first byte are envelopes
(the call settles first: a refusal or a client that left is released, not billed); after it,
the body is cut (the connection closes without its end), which every HTTP client reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tokendock.errors import ClientLeft
from tokendock.inference.backend import Chunk, InferenceRequest, Output
from tokendock.services.pipeline import Call
from tokendock.storage.accounts import KeyRow
from tokendock.web import headers
from tokendock.web.api.respond import ClientGone, cancel_on_disconnect, note
from tokendock.web.deps import Services, request_id
from tokendock.web.shutdown import CLIENT_GONE
from tokendock.web.sse import wait_for_disconnect

log = logging.getLogger(__name__)


async def relay(
    request: Request, deps: Services, key: KeyRow, req: InferenceRequest, *, watch: bool
) -> Response:
    call = await deps.pipeline.start(key, req, request_id(request))
    assert isinstance(call, Call), "no Idempotency-Key replay for pass-through routes"
    events = call.events()
    try:
        work = _first(call, events)
        first = await (cancel_on_disconnect(request, work) if watch else work)
    except (ClientGone, ClientLeft):
        await _close(events)
        note(call.ticket)
        return Response(status_code=CLIENT_GONE)
    except BaseException:
        await _close(events)
        note(call.ticket)
        raise
    return RelayResponse(first, events, call, headers.held(call.ticket), watch=watch)


async def _first(call: Call, events: AsyncIterator[Output]) -> Chunk:
    await call.begin()
    first = await anext(events)
    assert isinstance(first, Chunk), "an opaque answer is made of chunks"
    return first


async def _close(events: AsyncIterator[Output]) -> None:
    with contextlib.suppress(Exception):
        await events.aclose()  # type: ignore[attr-defined]


class RelayResponse(Response):
    def __init__(
        self,
        first: Chunk,
        rest: AsyncIterator[Output],
        call: Call,
        extra: dict[str, str],
        *,
        watch: bool,
    ):
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", (first.content_type or "application/octet-stream").encode("latin-1")),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
        ]
        self._first = first
        self._rest = rest
        self._call = call
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.ensure_future(self._produce(send))
        tasks: set[asyncio.Future[None]] = {producer}
        if self._watch:
            tasks.add(asyncio.ensure_future(wait_for_disconnect(receive)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _close(self._rest)  # ends the call (settles) if the relay did not get there
            await self._call.abandon()  # a no-op once the events ended it
            note(self._call.ticket)
        if producer.done() and not producer.cancelled() and producer.exception() is not None:
            raise producer.exception()  # type: ignore[misc]  # cut: the body has no end

    async def _produce(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        if self._first.data:
            await send({"type": "http.response.body", "body": self._first.data, "more_body": True})
        try:
            async for item in self._rest:
                if isinstance(item, Chunk) and item.data:
                    await send({"type": "http.response.body", "body": item.data, "more_body": True})
        except Exception:
            log.warning("a pass-through answer was cut by its upstream", exc_info=True)
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})

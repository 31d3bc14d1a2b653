"""What every completion-style endpoint shares: hand the typed request to the pipeline, then
render its events through the endpoint's `Wire` — as one JSON body, or as server-sent events —
with headers built from the typed ticket and settlement.

Stream order (../shared/OPENAI-API.md): each choice's opening chunk (when the wire has one),
content chunks, exactly one finish chunk per choice, the usage chunk when asked, then
`data: [DONE]`. A failure after the first byte becomes `data: {"error": …}` then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokendock import observability
from tokendock.billing.money import format_credits
from tokendock.errors import InternalError, TokenDockError
from tokendock.inference.backend import Delta, Event, Finish, InferenceRequest
from tokendock.protocol.common import SamplingFields, response_body, usage_dict
from tokendock.protocol.errors import envelope
from tokendock.protocol.sse import DONE, event
from tokendock.services.answer import Answer
from tokendock.services.gate import Ticket
from tokendock.services.idempotency import Replay
from tokendock.services.pipeline import Call, IdempotencyKey
from tokendock.storage.accounts import KeyRow
from tokendock.web import headers
from tokendock.web.deps import Services, current_key, parse_body, request_id, services_of
from tokendock.web.ids import hex_id
from tokendock.web.shutdown import CLIENT_GONE
from tokendock.web.sse import EventStreamResponse

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound=SamplingFields)
# Stores a whole answer (its wire body) once it is complete: `store: true` (web/api/stored_chat.py)
Keep = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Stamp:
    """What every chunk of one response shares."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> Stamp:
        return cls(f"{prefix}-{hex_id(12)}", int(time.time()), model)


def stamped(stamp: Stamp) -> dict[str, Any]:
    """The stamp as protocol.common.response_body's keyword arguments."""
    return {"response_id": stamp.id, "created": stamp.created, "model": stamp.model}


def sampled(req: SamplingFields) -> dict[str, Any]:
    """The InferenceRequest fields every completion-style schema shares."""
    return {
        "model": req.model,
        "n": req.n or 1,
        "stop": req.stop_list(),
        "temperature": req.temperature,
        "top_p": req.top_p,
        "presence_penalty": req.presence_penalty or 0.0,
        "frequency_penalty": req.frequency_penalty or 0.0,
        "seed": req.seed,
        "logit_bias": req.logit_bias_ids(),
        "user": req.user,
        "stream": bool(req.stream),
        "include_usage": req.include_usage(),
    }


def endpoint(
    schema: type[S],
    to_request: Callable[[S, bytes], InferenceRequest],
    wire: Wire,
    *,
    keep: Callable[[Services, KeyRow, S, bytes], Awaitable[Keep | None]] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A plain Starlette handler (the hot path skips FastAPI's dependency solving): key, body,
    the schema's own rules, then the pipeline. `keep`: what stores this request's answer, if
    it asks to be stored."""

    async def handle(request: Request) -> Response:
        deps = services_of(request)
        key = await current_key(request)
        req = await parse_body(request, schema)
        req.check()
        body = await request.body()
        keeping = None if keep is None else await keep(deps, key, req, body)
        return await serve(request, deps, key, to_request(req, body), wire, keep=keeping)

    return handle


class Wire(Protocol):
    """One endpoint family's format (chat completions, text completions, …)."""

    prefix: str  # of response ids: "chatcmpl", "cmpl"
    chunk_object: str

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        """The chunk that opens choice `index` of a stream, if the format has one."""
        ...

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]: ...

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]: ...


async def serve(
    request: Request,
    deps: Services,
    key: KeyRow,
    req: InferenceRequest,
    wire: Wire,
    *,
    stream: Callable[[Call, Stamp], AsyncIterator[bytes]] | None = None,
    keep: Keep | None = None,
) -> Response:
    """Run `req` through the pipeline and answer in `wire`'s format. `stream`: a wire whose
    streams are not OpenAI-style chunks renders the whole event stream itself. `keep`: stores
    the whole answer once complete (a stream's: assembled from its events, before `[DONE]`)."""
    stamp = Stamp.new(wire.prefix, req.model)

    async def render(call: Call, answer: Answer) -> bytes:
        whole = wire.body(stamp, answer, usage_of(call))
        if keep is not None:
            await keep(whole)
        return orjson.dumps(whole)

    def events(call: Call) -> AsyncIterator[bytes]:
        return _sse(call, stamp, wire, keep) if stream is None else stream(call, stamp)

    return await drive(request, deps, key, req, read=Call.collect, render=render, stream=events)


async def drive(
    request: Request,
    deps: Services,
    key: KeyRow,
    req: InferenceRequest,
    *,
    read: Callable[[Call], Awaitable[T]],
    render: Callable[[Call, T], Awaitable[bytes]],
    stream: Callable[[Call], AsyncIterator[bytes]],
) -> Response:
    """THE way a front door runs a request over HTTP: the pipeline's call (or an
    `Idempotency-Key` replay); `begin()` and, for a whole answer, `read` under the client's
    watch (the client leaving cancels them: the call ends, settled as client_disconnected);
    then `render` the body (after the answer: storing it is not cancelled by the client
    leaving) — or the `stream` of server-sent events, whose closing ends the call."""
    call = await start(request, deps, key, req)
    if isinstance(call, Response):
        return call
    try:
        got = await cancel_on_disconnect(request, _begun(call, None if req.stream else read))
    except ClientGone:
        note(call.ticket)
        return Response(status_code=CLIENT_GONE)
    except BaseException:
        note(call.ticket)
        raise
    if req.stream:
        return EventStreamResponse(
            stream(call),
            keepalive=deps.settings.keepalive_seconds,
            headers=headers.held(call.ticket),
            on_close=lambda: _ended(call),
        )
    note(call.ticket)
    assert got is not None
    body = await render(call, got)
    await call.answered(body)
    return Response(body, media_type="application/json", headers=headers.settled(call.ticket))


async def _begun(call: Call, read: Callable[[Call], Awaitable[T]] | None) -> T | None:
    await call.begin()
    return None if read is None else await read(call)


async def _ended(call: Call) -> None:
    await call.abandon()
    note(call.ticket)


def _carries(delta: Delta) -> bool:
    return bool(
        delta.text
        or delta.tool_calls
        or delta.function_call
        or delta.refusal
        or delta.logprobs
        or delta.extra  # an upstream's reasoning, audio, annotations …
    )


async def start(
    request: Request, deps: Services, key: KeyRow, req: InferenceRequest
) -> Call | Response:
    """The pipeline's call for `req` (its model noted in the access line), or the stored answer
    when an `Idempotency-Key` retry has one."""
    record = observability.current()
    if record is not None:
        record.model = req.model
    idem = request.headers.get("idempotency-key")
    # The route is part of what a key names: the same body sent to another route (a compaction
    # after a response) is another request, never the first one's answer replayed.
    route = request.url.path.encode()
    claim = None if idem is None else IdempotencyKey(idem, route + b"\n" + await request.body())
    call = await deps.pipeline.start(key, req, request_id(request), idempotency=claim)
    if isinstance(call, Replay):
        return Response(
            call.body,
            status_code=call.status,
            media_type="application/json",
            headers={"idempotent-replayed": "true"},
        )
    return call


async def _sse(call: Call, stamp: Stamp, wire: Wire, keep: Keep | None) -> AsyncIterator[bytes]:
    with_usage = call.request.include_usage
    events = call.events()
    whole = None if keep is None else Answer()  # the answer to keep, assembled from the events
    try:
        for index in range(call.request.n * max(1, len(call.request.prompts))):
            opening = wire.opening(stamp, index, with_usage)
            if opening is None:
                break
            yield event(opening)
        async for item in events:
            if not isinstance(item, Delta | Finish):
                continue  # an embedding: never streamed
            if whole is not None:
                whole.take(item)
            if isinstance(item, Delta) and not _carries(item):
                continue  # nothing for the client (an upstream's empty or role-only chunk)
            yield event(wire.chunk(stamp, item, with_usage))
        if with_usage:
            yield event(_usage_chunk(call, stamp, wire.chunk_object))
    except Exception as exc:
        whole = None  # a failed stream is not kept
        yield failure_event(exc, stamp.id)
    finally:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
    if keep is not None and whole is not None:
        # Kept before [DONE]: a client that reads the stream to its end can retrieve it at once.
        await keep(wire.body(stamp, whole, usage_of(call)))
    yield DONE


def usage_of(call: Call) -> dict[str, Any]:
    """The usage object of what `call` was billed (its tally; zeros when nothing was)."""
    tally = call.tally
    if tally is None:
        return usage_dict(0, 0)
    return usage_dict(tally.prompt_tokens, tally.completion_tokens, tally.cached_tokens)


def _usage_chunk(call: Call, stamp: Stamp, object_name: str) -> dict[str, Any]:
    usage = usage_of(call)
    if call.settlement is not None:
        usage["cost"] = format_credits(call.settlement.charged)  # TokenDock's addition
    return response_body(object_name, **stamped(stamp), choices=[], usage=usage)


def failure_event(exc: Exception, stream_id: str) -> bytes:
    """The error event that ends a stream which failed after its first byte (then `[DONE]`)."""
    if isinstance(exc, TokenDockError) and not isinstance(exc, InternalError):
        return event(envelope(exc))  # written for the client (upstream failures, shutdown)
    # A server-side failure's own text (an engine exception's message) goes to the log only.
    log.error("stream %s failed", stream_id, exc_info=exc)
    code = exc.code if isinstance(exc, TokenDockError) else None
    return event(envelope(InternalError("The server had an error while generating.", code=code)))


def note(ticket: Ticket) -> None:
    """The access log line and metrics learn what the request was billed."""
    record = observability.current()
    if record is None:
        return
    tally, usage = ticket.outcome, ticket.usage
    if tally is not None:
        record.prompt_tokens, record.completion_tokens = (
            tally.prompt_tokens,
            tally.completion_tokens,
        )
        record.deployment, record.estimated = tally.deployment, tally.estimated
    if usage is not None:
        record.ttft_ms = usage.ttft_ms
    record.outcome = ticket.status
    record.cost_micro = ticket.settlement.charged if ticket.settlement is not None else None


class ClientGone(Exception):
    """The client disconnected before a non-streaming response was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task; if the client disconnects first, cancel it (freeing the
    engine) and raise ClientGone. One watcher task per request, no second task for the work."""
    me = asyncio.current_task()
    assert me is not None
    watcher = asyncio.ensure_future(_disconnected(request))
    gone = over = False

    def client_left(w: asyncio.Future[None]) -> None:
        nonlocal gone
        # `over`: a callback already scheduled when the work ended must not cancel what follows.
        if not over and not w.cancelled() and w.exception() is None:
            gone = True
            me.cancel()

    watcher.add_done_callback(client_left)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and me.uncancel() == 0:
            raise ClientGone from None
        raise
    finally:
        over = True
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass

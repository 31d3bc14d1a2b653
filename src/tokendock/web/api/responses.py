"""The Responses API (OpenAI's `/v1/responses`) on the one pipeline.

POST /v1/responses                      create: whole, streamed (typed events), or background
GET / DELETE /v1/responses/{id}         a stored response (the account's own: else 404)
GET /v1/responses/{id}/input_items      its input items, paginated (after, limit, order)
POST /v1/responses/{id}/cancel          a background response
POST /v1/responses/input_tokens         the input's tokens, nothing generated
POST /v1/responses/compact              older turns → one compaction item (responses_items.py)

A create is parsed (protocol/responses.py), its conversation assembled (the previous
response's items, then its own input) and adapted into one `InferenceRequest`
(responses_request.py); the pipeline admits, runs and settles it exactly as a chat completion,
so the usage row and its cost are the same for the same tokens.

With `conversation`, the conversation's items (services/conversations.py) are the input's
prefix and the response's turn is appended to it when it ends (services/responses.py `keep`).
Compaction items in the input (or the prefix) are checked and opened (services/compaction.py)
before admission: a bad one is a 400 naming `input`, nothing billed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock import observability
from tokendock.inference.backend import InferenceRequest
from tokendock.protocol.response_shapes import (
    JSON,
    OutputBuilder,
    ResponseRecord,
    new_id,
    response_object,
)
from tokendock.protocol.responses import ResponseRequest, input_items
from tokendock.services.compaction import Seal
from tokendock.services.conversations import Conversations
from tokendock.services.pipeline import Call
from tokendock.services.responses import Responses, conversation_of, run
from tokendock.storage.accounts import KeyRow
from tokendock.web import headers
from tokendock.web.api.respond import drive, start
from tokendock.web.api.responses_items import compact, input_tokens, list_input_items
from tokendock.web.api.responses_request import inference_request, kept_parts, truncated
from tokendock.web.deps import Services, current_key, parse_body, services_of
from tokendock.web.responses import JSONResponse

log = logging.getLogger(__name__)


def responses_of(request: Request) -> Responses:
    responses: Responses = request.app.state.responses
    return responses


def conversations_of(request: Request) -> Conversations:
    conversations: Conversations = request.app.state.conversations
    return conversations


def seal_of(request: Request) -> Seal:
    seal: Seal = request.app.state.compaction
    return seal


def shown(rec: ResponseRecord) -> JSON:
    """The response object, with the conversation it belongs to (`{"id": …}` or null)."""
    body = response_object(rec)
    conversation = conversation_of(rec)
    body["conversation"] = None if conversation is None else {"id": conversation}
    return body


async def prefix(request: Request, account_id: int, req: ResponseRequest) -> list[JSON]:
    """The items before the request's own input: its conversation's, or the history of its
    previous response (neither: none)."""
    conversation = req.conversation_id()
    if conversation is None:
        return await responses_of(request).context(account_id, req.previous_response_id)
    truncating = req.truncation == "auto"
    return await conversations_of(request).prefix(account_id, conversation, truncating=truncating)


async def create(request: Request) -> Response:
    deps = services_of(request)
    key = await current_key(request)
    req = await parse_body(request, ResponseRequest)
    req.check()
    responses = responses_of(request)
    context = await prefix(request, key.account_id, req)
    own = input_items(req.input)
    items = truncated(req, [*context, *own], deps.models.spec(req.model))
    context, own = kept_parts(context, own, items)  # only what the prompt reads is stored
    opened = seal_of(request).opened(key.account_id, items)  # a bad one: 400, nothing billed
    stream = bool(req.stream)
    inference = inference_request(req, items, stream=stream, opened=opened)
    rec = ResponseRecord(
        id=new_id("resp"),
        account_id=key.account_id,
        model=req.model,
        created_at=int(time.time()),
        background=bool(req.background),
        previous_response_id=req.previous_response_id,
        request=echoed(req),
        input_items=own,
        context=context,
        metadata=req.metadata,
    )
    record = observability.current()
    if record is not None:
        record.model = req.model
    store = req.store is not False
    keeps = store or conversation_of(rec) is not None  # stores the response, or its turn
    if keeps:
        await responses.check_quota(rec, store=store)  # before admission: nothing billed
    if req.background:
        return await _background(request, deps, key, inference, rec)
    builder = OutputBuilder()

    async def read(call: Call) -> ResponseRecord:
        async for _ in run(call, builder, rec):
            pass
        return rec

    async def render(call: Call, done: ResponseRecord) -> bytes:
        if keeps:
            await responses.keep(done, store=store)
        return orjson.dumps(shown(done))

    def events(call: Call) -> AsyncIterator[bytes]:
        return _sse(call, builder, rec, responses if keeps else None, store)

    return await drive(request, deps, key, inference, read=read, render=render, stream=events)


def echoed(req: ResponseRequest) -> JSON:
    """The request's parameters the response object repeats."""
    given = {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "user": req.user,
    }
    conversation = req.conversation_id()
    return {
        **{k: v for k, v in given.items() if v is not None},
        **({} if conversation is None else {"conversation": {"id": conversation}}),
        "parallel_tool_calls": req.parallel_tool_calls is not False,
        "store": req.store is not False,
        "format": req.text_format(),
        "tool_choice": _choice_echoed(req),
        "tools": req.tools_echoed(),
        "truncation": req.truncation or "disabled",
    }


def _choice_echoed(req: ResponseRequest) -> str | JSON:
    """`tool_choice` as OpenAI echoes it — only its defined fields are stored."""
    choice = req.choice()
    if isinstance(req.tool_choice, dict):
        return {"type": "function", "name": choice}
    return choice


async def _whole(call: Call, builder: OutputBuilder, rec: ResponseRecord) -> None:
    await call.begin()
    async for _ in run(call, builder, rec):
        pass


async def _background(
    request: Request, deps: Services, key: KeyRow, inference: InferenceRequest, rec: ResponseRecord
) -> Response:
    """Admitted now (a 402 or 429 is this request's answer; an `Idempotency-Key` retry gets the
    first answer: the same response id); run by a tracked task."""
    call = await start(request, deps, key, inference)
    if isinstance(call, Response):
        return call
    rec.status = "queued"
    try:
        await responses_of(request).insert_queued(rec)  # over the quota: 400, hold released
        responses_of(request).launch(call, rec)
    except BaseException:
        await call.abandon()  # nothing ran: the hold is released
        raise
    body = orjson.dumps(shown(rec))
    await call.answered(body)
    return Response(body, media_type="application/json", headers=headers.held(call.ticket))


def frame(body: JSON) -> bytes:
    """One server-sent event, named by its type as OpenAI's are."""
    kind: str = body["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


async def _sse(
    call: Call,
    builder: OutputBuilder,
    rec: ResponseRecord,
    responses: Responses | None,
    store: bool,
) -> AsyncIterator[bytes]:
    """`responses`: what keeps the ended response (stored with `store`, and its turn in its
    conversation), before the final event — a client that read to the end can retrieve it."""
    yield frame(builder.event("response.created", response=shown(rec)))
    yield frame(builder.event("response.in_progress", response=shown(rec)))
    final = "response.completed"
    events = run(call, builder, rec)
    try:
        async for batch in events:
            for body in batch:
                yield frame(body)
        if rec.status == "incomplete":
            final = "response.incomplete"
    except Exception as exc:
        final = "response.failed"
        if rec.error is None or rec.error["message"].startswith("The server had an error"):
            log.error("stream %s failed", rec.id, exc_info=exc)
        message = rec.error["message"] if rec.error else "The server had an error."
        yield frame(builder.event("error", code="server_error", message=message, param=None))
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    if responses is not None:
        try:
            await responses.keep(rec, store=store)
        except Exception:
            log.exception("could not store response %s", rec.id)
    yield frame(builder.event(final, response=shown(rec)))


async def one(request: Request) -> Response:
    """GET (retrieve) or DELETE a stored response."""
    key = await current_key(request)
    response_id = request.path_params["response_id"]
    responses = responses_of(request)
    if request.method == "DELETE":
        await responses.delete(key.account_id, response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})
    return JSONResponse(shown(await responses.get(key.account_id, response_id)))


async def cancel(request: Request) -> Response:
    key = await current_key(request)
    rec = await responses_of(request).cancel(key.account_id, request.path_params["response_id"])
    return JSONResponse(shown(rec))


async def items(request: Request) -> Response:
    key = await current_key(request)
    rec = await responses_of(request).get(key.account_id, request.path_params["response_id"])
    return JSONResponse(list_input_items(rec.input_items, request.query_params))


async def count(request: Request) -> Response:
    deps = services_of(request)
    key = await current_key(request)

    async def before(req: ResponseRequest) -> list[JSON]:
        return await prefix(request, key.account_id, req)

    total = await input_tokens(request, deps, key, before, seal_of(request))
    return JSONResponse({"object": "response.input_tokens", "input_tokens": total})


async def compact_route(request: Request) -> Response:
    deps = services_of(request)
    key = await current_key(request)
    return await compact(request, deps, key, responses_of(request), seal_of(request))


routes = [
    Route("/v1/responses", create, methods=["POST"]),
    Route("/v1/responses/input_tokens", count, methods=["POST"]),
    Route("/v1/responses/compact", compact_route, methods=["POST"]),
    Route("/v1/responses/{response_id}", one, methods=["GET", "DELETE"]),
    Route("/v1/responses/{response_id}/input_items", items, methods=["GET"]),
    Route("/v1/responses/{response_id}/cancel", cancel, methods=["POST"]),
]

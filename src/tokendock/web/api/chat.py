from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.protocol.chat import ChatCompletionRequest, chunk_body, completion_body
from tokendock.protocol.common import usage_dict
from tokendock.storage.accounts import KeyRow
from tokendock.web.api import proxied
from tokendock.web.api.billing_headers import hold_headers, settled_headers
from tokendock.web.api.streaming import (
    ChunkFn,
    ClientGone,
    Stamp,
    cancel_on_disconnect,
    sse_events,
)
from tokendock.web.deps import Services, current_key, parse_body, request_id, services_of
from tokendock.web.responses import JSONResponse
from tokendock.web.sse import EventStreamResponse


async def chat_completions(request: Request) -> Response:
    # A plain Starlette route: the hot path skips FastAPI's dependency solving.
    deps = services_of(request)
    key = await current_key(request)
    idem = request.headers.get("idempotency-key")
    if idem is None:
        return await _chat(request, deps, key)
    guard = deps.idempotency
    replay = await guard.begin(key.id, idem, await request.body())
    if replay is not None:
        return Response(
            replay.body,
            status_code=replay.status,
            media_type="application/json",
            headers={"idempotent-replayed": "true"},
        )
    try:
        response = await _chat(request, deps, key)
    except BaseException:
        await guard.failed(key.id, idem)
        raise
    if isinstance(response, EventStreamResponse):
        await guard.streamed(key.id, idem)
    elif response.status_code == 200:
        await guard.done(key.id, idem, response.status_code, bytes(response.body))
    else:
        await guard.failed(key.id, idem)
    return response


def chat_chunk(with_usage: bool) -> ChunkFn:
    """Chunk bodies for one chat stream: opening (text None), content, or finish."""

    def chunk(s: Stamp, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
        if text is None:
            delta: dict[str, Any] = {"role": "assistant", "content": ""}
        elif finish is not None:
            delta = {}
        else:
            delta = {"content": text}
        return chunk_body(
            request_id=s.id,
            created=s.created,
            model=s.model,
            index=index,
            delta=delta,
            finish_reason=finish,
            with_usage_field=with_usage,
        )

    return chunk


async def _chat(request: Request, deps: Services, key: KeyRow) -> Response:
    req = await parse_body(request, ChatCompletionRequest)
    if deps.proxy.serves(req.model):
        proxy_run = await deps.proxy.admit_chat(key, req, await request.body(), request_id(request))
        return await proxied.respond(request, deps, proxy_run)
    service = deps.completions
    run = await service.admit(key, service.plan_chat(req), request_id(request))
    try:
        await cancel_on_disconnect(request, service.prepare(run))
    except ClientGone:
        return Response(status_code=499)
    stamp = Stamp.new("chatcmpl", req.model)
    if req.stream:
        with_usage = req.include_usage()
        events = sse_events(
            service.stream(run),
            run,
            stamp,
            chat_chunk(with_usage),
            include_usage=with_usage,
            object_name="chat.completion.chunk",
            opening=True,
        )
        return EventStreamResponse(
            events,
            keepalive=deps.settings.keepalive_seconds,
            headers=hold_headers(run),
            on_close=lambda: service.abandon(run),
        )
    try:
        choices = await cancel_on_disconnect(request, service.complete(run))
    except ClientGone:
        return Response(status_code=499)
    body = completion_body(
        request_id=stamp.id,
        created=stamp.created,
        model=stamp.model,
        choices=[(c.text, c.finish_reason) for c in choices],
        usage=usage_dict(run.prompt_tokens, sum(c.completion_tokens for c in choices)),
    )
    return JSONResponse(body, headers=settled_headers(run))


routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"])]

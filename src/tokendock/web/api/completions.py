from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.protocol.common import usage_dict
from tokendock.protocol.completions import (
    CompletionRequest,
    text_chunk_body,
    text_completion_body,
)
from tokendock.web.api import proxied
from tokendock.web.api.billing_headers import hold_headers, settled_headers
from tokendock.web.api.streaming import ClientGone, Stamp, cancel_on_disconnect, sse_events
from tokendock.web.deps import current_key, parse_body, request_id, services_of
from tokendock.web.responses import JSONResponse
from tokendock.web.sse import EventStreamResponse


async def completions(request: Request) -> Response:
    # A plain Starlette route: the hot path skips FastAPI's dependency solving.
    deps = services_of(request)
    key = await current_key(request)
    req = await parse_body(request, CompletionRequest)
    if deps.proxy.serves(req.model):
        proxy_run = await deps.proxy.admit_text(key, req, await request.body(), request_id(request))
        return await proxied.respond(request, deps, proxy_run)
    service = deps.completions
    run = await service.admit(key, service.plan_text(req), request_id(request))
    try:
        await cancel_on_disconnect(request, service.prepare(run))
    except ClientGone:
        return Response(status_code=499)
    stamp = Stamp.new("cmpl", req.model)
    if req.stream:
        with_usage = req.include_usage()

        def chunk(s: Stamp, index: int, text: str | None, finish: str | None) -> dict[str, Any]:
            return text_chunk_body(
                request_id=s.id,
                created=s.created,
                model=s.model,
                index=index,
                text=text or "",
                finish_reason=finish,
                with_usage_field=with_usage,
            )

        events = sse_events(
            service.stream(run),
            run,
            stamp,
            chunk,
            include_usage=with_usage,
            object_name="text_completion",
            opening=False,
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
    body = text_completion_body(
        request_id=stamp.id,
        created=stamp.created,
        model=stamp.model,
        choices=[(c.text, c.finish_reason) for c in choices],
        usage=usage_dict(run.prompt_tokens, sum(c.completion_tokens for c in choices)),
    )
    return JSONResponse(body, headers=settled_headers(run))


routes = [Route("/v1/completions", completions, methods=["POST"])]

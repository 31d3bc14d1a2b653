"""Responses for models served by upstream deployments (services/proxy.py does the work)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokendock.protocol.sse import DONE, event
from tokendock.services.proxy import ProxyRun
from tokendock.web.api.billing_headers import hold_headers, settled_headers
from tokendock.web.api.streaming import ClientGone, cancel_on_disconnect, failure_event
from tokendock.web.deps import Services
from tokendock.web.responses import JSONResponse
from tokendock.web.sse import EventStreamResponse

log = logging.getLogger(__name__)


async def respond(request: Request, deps: Services, run: ProxyRun) -> Response:
    service = deps.proxy
    if not run.stream:
        try:
            body = await cancel_on_disconnect(request, service.complete(run))
        except ClientGone:
            return Response(status_code=499)
        return JSONResponse(body, headers=settled_headers(run))
    # Retries happen here, before any header is sent: a failure is still a plain error status.
    try:
        answer = await cancel_on_disconnect(request, service.open(run))
    except ClientGone:
        return Response(status_code=499)
    return EventStreamResponse(
        _sse(service.events(run, answer), run),
        keepalive=deps.settings.keepalive_seconds,
        headers=hold_headers(run),
        on_close=lambda: service.abandon(run, answer),
    )


async def _sse(events: AsyncIterator[dict[str, Any]], run: ProxyRun) -> AsyncIterator[bytes]:
    try:
        async for item in events:
            yield event(item)
    except Exception as exc:
        yield failure_event(exc, run.id)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    yield DONE

"""The hot paths, dispatched without the framework: a pure-ASGI step in front of FastAPI's
router that sends `POST /v1/chat/completions` and `POST /v1/completions` straight to their
handlers. FastAPI's routing, its exception middleware and dependency machinery cost about a
tenth of a request's CPU on these paths; everything they did here is done by the middleware
around this (request id, body cap, errors → envelopes: web/middleware.py). Other methods on
these paths and every other URL go on to FastAPI (which also lists these routes in OpenAPI)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], Handler]):
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

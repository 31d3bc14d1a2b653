"""TokenDock's own pure-ASGI layers, in front of FastAPI's whole stack.

    uvicorn → RequestContextMiddleware → ShutdownMiddleware → HotRoutes → FastAPI (its own
              middleware: server errors, telemetry, body limit, exceptions → router)

FastAPI wraps every request in several middlewares of its own before `add_middleware`'s; on the
two hot paths they cost more than the rest of the web layer. Here the request id, body cap,
access line, graceful shutdown and the hot routes come first, and only other URLs go on into
FastAPI. An unhandled exception anywhere reaches RequestContextMiddleware, which logs it and
answers a 500 envelope; inside FastAPI a catch-all handler makes its ServerErrorMiddleware send
the same envelope (see web/errors.py)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class FrontedFastAPI(FastAPI):
    """A FastAPI app whose ASGI entry is `front(inner)`, `inner` being FastAPI's own entry."""

    _front: ASGIApp | None = None

    def put_in_front(self, build: Callable[[ASGIApp], ASGIApp]) -> None:
        self._front = build(super().__call__)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self  # what starlette's Request.app reads (FastAPI sets it too, later)
        front = self._front
        if front is None:
            await super().__call__(scope, receive, send)
        else:
            await front(scope, receive, send)

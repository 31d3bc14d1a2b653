"""Pure-ASGI middleware: request ids, body-size limit, the last line of error defence, and the
request's record (observability.py): one log line and the metrics once the response has ended.

Every response gets `x-request-id: req_<32 hex>`. A body over the limit is refused with 413
before the endpoint runs (by Content-Length) or as soon as the streamed body crosses it. Any
exception that escapes an endpoint becomes a 500 envelope (never a traceback) if the response
has not started; a 500's own text stays in the log (errors.public). A RecursionError is the
client's over-nested input: a 400 and one log line, never a traceback. Client errors (4xx)
are never logged with a traceback. Streaming responses pass through untouched.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokendock import observability
from tokendock.errors import InternalError, RequestTooLarge, TokenDockError
from tokendock.observability import Metrics, RequestRecord
from tokendock.web.errors import GENERIC, public, recursion_site, too_deep
from tokendock.web.headers import of_error
from tokendock.web.ids import hex_id
from tokendock.web.responses import for_path

log = logging.getLogger(__name__)


def new_request_id() -> str:
    return "req_" + hex_id(16)


# Probes and scrapes: counted in no metric and logged at debug level only.
QUIET_PATHS = frozenset({"/health", "/ready", "/metrics"})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        record = RequestRecord(request_id, scope["method"], scope["path"])
        token = observability.begin(record)
        quiet = record.path in QUIET_PATHS
        metrics = None if quiet else self.metrics
        if metrics is not None:
            metrics.entered()
        try:
            await self._handle(scope, receive, send, record)
        finally:
            observability.end(token)
            if metrics is not None:
                metrics.left()
                metrics.observe(record)
            if not quiet:
                observability.log_request(record)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        request_id = record.request_id
        id_header = (b"x-request-id", request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_error(send_with_id, _too_large(limit), record.path)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except ClientDisconnect:
            # The client left while its request body was being read: nobody to answer.
            record.outcome = "client_disconnected"
        except TokenDockError as exc:
            if not started:
                await _send_error(send_with_id, public(exc), record.path)
        except RecursionError as exc:
            # The client's input nested past what some walk of it can follow: a 400 (already
            # sent by FastAPI's handler inside FastAPI) and one line, not ~150 KB of frames.
            log.warning(
                "request %s (%s %s) nested too deeply: RecursionError at %s",
                request_id,
                scope["method"],
                scope["path"],
                recursion_site(exc),
            )
            if not started:
                await _send_error(send_with_id, too_deep(), record.path)
        except Exception:
            log.exception(
                "unhandled error for %s %s (%s)", scope["method"], scope["path"], request_id
            )
            if not started:
                await _send_error(send_with_id, InternalError(GENERIC), record.path)


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body is larger than the limit of {limit} bytes.")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_error(send: Send, err: TokenDockError, path: str) -> None:
    record = observability.current()
    if record is not None:
        record.error = err.code or err.type
    body, status = for_path(err, path)  # Anthropic's envelope on /v1/messages…
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in of_error(err).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

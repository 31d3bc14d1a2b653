"""JSON responses through orjson, and the error envelope as a response: OpenAI's, or on
Anthropic's Messages API routes (`/v1/messages…`) Anthropic's (`for_path`)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from tokendock.errors import TokenDockError
from tokendock.protocol import messages
from tokendock.protocol.errors import envelope
from tokendock.web.headers import of_error


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(err: TokenDockError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        envelope(err), status_code=err.status, headers={**of_error(err), **(headers or {})}
    )


def error_bytes(err: TokenDockError) -> bytes:
    return orjson.dumps(envelope(err))


def anthropic_path(path: str) -> bool:
    """A route of Anthropic's Messages API: its errors are Anthropic's envelope."""
    return path.startswith("/v1/messages")


def for_path(err: TokenDockError, path: str) -> tuple[bytes, int]:
    """The error's body and status as the route's API writes them (Anthropic's: a 503 is its
    529 `overloaded_error`)."""
    if anthropic_path(path):
        return orjson.dumps(messages.error_envelope(err)), messages.error_status(err)
    return error_bytes(err), err.status

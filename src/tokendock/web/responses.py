"""JSON responses through orjson, and the OpenAI error envelope as a response."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from tokendock.errors import TokenDockError
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

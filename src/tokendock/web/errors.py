"""Exceptions → the OpenAI envelope. FastAPI's 422 `{"detail": …}` never reaches a client, and
neither does a server path, a traceback or an exception's text: those stay in the log (the
middleware logs any unhandled exception with the request id and answers a generic 500)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from tokendock import observability
from tokendock.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    TokenDockError,
    UnknownURL,
)
from tokendock.protocol import messages
from tokendock.protocol.errors import param_path
from tokendock.web.headers import of_error
from tokendock.web.responses import JSONResponse, anthropic_path, error_response

log = logging.getLogger(__name__)


GENERIC = "The server had an internal error."


async def _tokendock_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenDockError)
    err = public(exc)
    _note(err)
    if anthropic_path(request.url.path):  # Anthropic's APIs (/v1/messages…): its envelope
        body, status = messages.error_envelope(err), messages.error_status(err)
        return JSONResponse(body, status_code=status, headers=of_error(err))
    return error_response(err)


def public(err: TokenDockError) -> TokenDockError:
    """What a client may see of an error. A 500's own text (an engine's exception message, say)
    goes to the log with the request id; the client gets a generic message and the code."""
    if not isinstance(err, InternalError) or err.message == GENERIC:
        return err
    record = observability.current()
    where = record.request_id if record is not None else "-"
    log.error("internal error %s (%s): %s", err.code or err.type, where, err.message)
    safe = InternalError(GENERIC, code=err.code)
    safe.retry_after, safe.windows = err.retry_after, err.windows
    return safe


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        err: TokenDockError = UnknownURL(f"Invalid URL ({where}).")
    elif exc.status_code == 405:
        allow = headers.get("Allow", "")
        err = MethodNotAllowed(f"Method not allowed ({where}); allowed: {allow}.")
    elif exc.status_code >= 500:
        err = InternalError(GENERIC)
        err.status = exc.status_code
    else:
        err = TokenDockError(str(exc.detail))
        err.status = exc.status_code
        err.type = "invalid_request_error"
    _note(err)
    if anthropic_path(request.url.path):  # Anthropic's Messages API: its envelope
        body, status = messages.error_envelope(err), messages.error_status(err)
        return JSONResponse(body, status_code=status, headers={**of_error(err), **headers})
    return error_response(err, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = validation_error(exc.errors())
    _note(err)
    return error_response(err)


def validation_error(errors: Any) -> InvalidRequest:
    """FastAPI's query / path / header errors as a 400 naming the parameter. Only pydantic's
    short message is kept: `str(exc)` would show the endpoint's source file and line."""
    first: dict[str, Any] = next(iter(errors), {})
    loc = tuple(first.get("loc", ()))
    if loc and loc[0] in ("query", "path", "header", "cookie", "body"):
        loc = loc[1:]
    param = param_path(loc) or None
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param)
    msg = str(first.get("msg", "invalid value"))
    detail = msg[0].lower() + msg[1:] if msg else "invalid value"
    return InvalidRequest(f"Invalid value for '{param}': {detail}.", param=param)


def _note(err: TokenDockError) -> None:
    record = observability.current()
    if record is not None:
        record.error = err.code or err.type


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Inside FastAPI, what its ServerErrorMiddleware answers (it re-raises the exception to
    the request middleware, which logs it with the request id)."""
    err: TokenDockError = too_deep() if isinstance(exc, RecursionError) else InternalError(GENERIC)
    _note(err)
    if anthropic_path(request.url.path):
        body, status = messages.error_envelope(err), messages.error_status(err)
        return JSONResponse(body, status_code=status)
    return error_response(err)


def too_deep() -> InvalidRequest:
    """A RecursionError while handling a request: something the client sent (a regex, a chain
    of `$ref`s, a nested schema) went deeper than the code walking it can follow. The client's
    doing, so a 400; the protocol/screen.py bounds and the grammar's own limits should refuse
    such input first, with the field named."""
    return InvalidRequest(
        "The request is nested too deeply to be processed; simplify its nested structures "
        "(JSON schemas, patterns, references)."
    )


def recursion_site(exc: BaseException) -> str:
    """Where a RecursionError was raised (file:line of its innermost frame), for one log line
    instead of a traceback of a thousand frames."""
    tb = exc.__traceback__
    if tb is None:
        return "?"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unhandled)
    app.add_exception_handler(TokenDockError, _tokendock_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

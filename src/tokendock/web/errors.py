"""Exceptions → the OpenAI envelope. FastAPI's 422 `{"detail": …}` never reaches a client."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from tokendock import observability
from tokendock.errors import InvalidRequest, MethodNotAllowed, TokenDockError, UnknownURL
from tokendock.web.responses import JSONResponse, error_response


async def _tokendock_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TokenDockError)
    record = observability.current()
    if record is not None:
        record.error = exc.code or exc.type
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        return error_response(UnknownURL(f"Invalid URL ({where})."))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        not_allowed = MethodNotAllowed(f"Method not allowed ({where}); allowed: {allow}.")
        return error_response(not_allowed, headers=dict(exc.headers or {}))
    err = TokenDockError(str(exc.detail))
    err.status = exc.status_code
    err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(err, headers=dict(exc.headers or {}))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(InvalidRequest(f"Invalid request: {exc}"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(TokenDockError, _tokendock_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

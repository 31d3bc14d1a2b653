"""Anthropic's Message Batches API on the batch machinery (services/batches.py, the runner in
services/batch_runner.py): each request is one line, run through the one pipeline as
POST /v1/messages would run it, billed at the batch price.

POST /v1/messages/batches                    create: {"requests": [{"custom_id", "params"}]}
GET  /v1/messages/batches                    list, newest first (limit, before_id, after_id)
GET  /v1/messages/batches/{id}               retrieve
POST /v1/messages/batches/{id}/cancel        cancel: lines not started end `canceled`
GET  /v1/messages/batches/{id}/results       JSONL, one line per request, once it has ended

The key comes in `x-api-key` or `Authorization` (web/api/messages.py `authenticate`); every
error is Anthropic's envelope (`AnthropicRoute`, around the key's check too). Another
account's batch is a 404 `not_found_error`, exactly like an unknown id.

The create body is bounded by the server's `max_body_bytes` (4 MB by default) like every other
route: Anthropic allows larger batches, but a body is read whole before it is checked, so the
bound stays; a client with more sends several batches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response, StreamingResponse

from tokendock.errors import InvalidRequest, TokenDockError
from tokendock.protocol.messages import ERROR_TYPES, OVERLOADED
from tokendock.services.batches import Batches
from tokendock.storage.accounts import KeyRow
from tokendock.storage.batches import BatchRow, DoneLine
from tokendock.web.api.messages import authenticate, error_response
from tokendock.web.deps import parse_body
from tokendock.web.responses import JSONResponse


class AnthropicRoute(APIRoute):
    """A route whose errors (its dependencies' too: the key) are Anthropic's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await inner(request)
            except TokenDockError as exc:
                return error_response(exc)

        return handler


router = APIRouter(prefix="/v1/messages/batches", route_class=AnthropicRoute)
AnthropicKey = Annotated[KeyRow, Depends(authenticate)]
API = "anthropic"
MAX_LIMIT = 1000
CHUNK = 64 * 1024  # bytes of results sent at a time

ENDED = ("completed", "cancelled", "expired", "failed")  # our final statuses: "ended"


class MessageBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[Any]


def batches_of(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


def rfc3339(at: datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def processing_status(row: BatchRow) -> str:
    """Ours → Anthropic's: a final status is "ended"; validating / in_progress / finalizing
    are "in_progress", or "canceling" once a cancel was asked (cancelling too)."""
    if row.status in ENDED:
        return "ended"
    if row.status == "cancelling" or row.times["cancelling_at"] is not None:
        return "canceling"
    return "in_progress"


def results_url(request: Request, batch_id: str) -> str:
    base = str(request.base_url).rstrip("/")
    return f"{base}/v1/messages/batches/{batch_id}/results"


def batch_object(request: Request, row: BatchRow) -> dict[str, Any]:
    """Anthropic's MessageBatch object. The counts move as lines finish (`processing` is what
    is left), so a client can watch progress; they always sum to the number of requests."""
    status = processing_status(row)
    ended = status == "ended"
    return {
        "id": row.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": row.total - row.done,
            "succeeded": row.succeeded,
            "errored": row.errored,
            "canceled": row.canceled,
            "expired": row.expired,
        },
        "ended_at": rfc3339(row.times[f"{row.status}_at"]) if ended else None,
        "created_at": rfc3339(row.created_at),
        "expires_at": rfc3339(row.expires_at),
        "cancel_initiated_at": rfc3339(row.times["cancelling_at"]),
        "archived_at": None,
        "results_url": results_url(request, row.id) if ended else None,
    }


def error_type(status: int) -> str:
    """Anthropic's error type for a line's HTTP status (402, out of credit: billing_error)."""
    status = OVERLOADED if status == 503 else status
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def result_line(done: DoneLine) -> bytes:
    """One line of the results file: the request's custom_id and its result."""
    result: dict[str, Any]
    if done.outcome == "succeeded" and done.result is not None:
        result = {"type": "succeeded", "message": orjson.loads(done.result)["body"]}
    elif done.outcome == "errored":
        stored = orjson.loads(done.result) if done.result is not None else {}
        status = int(stored.get("status_code") or 500)
        inner = (stored.get("body") or {}).get("error") or {}
        error: dict[str, Any] = {
            "type": "error",
            "error": {
                "type": error_type(status),
                "message": inner.get("message") or "The request failed.",
            },
        }
        if stored.get("request_id"):
            error["request_id"] = stored["request_id"]
        result = {"type": "errored", "error": error}
    else:  # canceled, expired
        result = {"type": done.outcome}
    return orjson.dumps({"custom_id": done.custom_id, "result": result}) + b"\n"


async def result_lines(batches: Batches, batch_id: str) -> AsyncIterator[bytes]:
    """The results a page of lines at a time (storage reads PAGE lines per query), sent in
    chunks of about CHUNK bytes: never the whole batch in memory."""
    buffer = bytearray()
    async for done in batches.store.results(batch_id):
        buffer += result_line(done)
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


@router.post("")
async def create(request: Request, key: AnthropicKey) -> JSONResponse:
    body = await parse_body(request, MessageBatchCreate)
    try:
        row = await batches_of(request).create_messages(key, body.requests)
    except InvalidRequest as exc:  # Anthropic's envelope has no `param`: the message names it
        if exc.param is None or exc.message.startswith(exc.param):
            raise
        raise InvalidRequest(f"{exc.param}: {exc.message}", param=exc.param) from None
    return JSONResponse(batch_object(request, row))


def _limit(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"limit: expected an integer from 1 to {MAX_LIMIT}.", param="limit")
    return int(raw)


@router.get("")
async def listing(request: Request, key: AnthropicKey) -> JSONResponse:
    """Newest first; `after_id` pages to older batches, `before_id` to newer ones."""
    query = request.query_params
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise InvalidRequest("Only one of after_id and before_id may be given.")
    limit = _limit(query.get("limit", "20"))
    rows, more = await batches_of(request).page(key, API, after, limit, before=before)
    data = [batch_object(request, r) for r in rows]
    return JSONResponse(
        {
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    )


@router.get("/{message_batch_id}")
async def one(request: Request, key: AnthropicKey, message_batch_id: str) -> JSONResponse:
    return JSONResponse(
        batch_object(request, await batches_of(request).get(key, message_batch_id, API))
    )


@router.post("/{message_batch_id}/cancel")
async def cancel(request: Request, key: AnthropicKey, message_batch_id: str) -> JSONResponse:
    row = await batches_of(request).cancel(key, message_batch_id, API)
    return JSONResponse(batch_object(request, row))


@router.delete("/{message_batch_id}")
async def delete(request: Request, key: AnthropicKey, message_batch_id: str) -> JSONResponse:
    """An ended batch and its results go; its storage is freed."""
    await batches_of(request).delete(key, message_batch_id, API)
    return JSONResponse({"id": message_batch_id, "type": "message_batch_deleted"})


@router.get("/{message_batch_id}/results")
async def results(request: Request, key: AnthropicKey, message_batch_id: str) -> StreamingResponse:
    batches = batches_of(request)
    row = await batches.get(key, message_batch_id, API)
    if processing_status(row) != "ended":
        raise InvalidRequest(
            f"Message Batch {message_batch_id} has not yet ended (processing_status "
            f"'{processing_status(row)}'): its results are available once it has.",
            param="message_batch_id",
        )
    return StreamingResponse(result_lines(batches, row.id), media_type="application/x-jsonl")

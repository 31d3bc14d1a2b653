"""OpenAI's Batch API: POST /v1/batches, GET /v1/batches, GET /v1/batches/{batch_id},
POST /v1/batches/{batch_id}/cancel. The work is the runner's (services/batch_runner.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from tokendock.billing.money import format_credits
from tokendock.errors import InvalidRequest
from tokendock.services.batches import Batches
from tokendock.storage.batches import BatchRow
from tokendock.web.deps import CurrentKey, parse_body
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1/batches")
MAX_LIMIT = 100


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None = None
    output_expires_after: dict[str, Any] | None = None


def batches_of(request: Request) -> Batches:
    batches: Batches = request.app.state.batches
    return batches


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def batch_object(row: BatchRow) -> dict[str, Any]:
    """OpenAI's Batch object (plus TokenDock's `cost` so far, in credits)."""
    errors = None if row.errors is None else orjson.loads(row.errors)
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "model": row.model,
        "errors": errors,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _unix(row.created_at),
        "in_progress_at": _unix(row.times["in_progress_at"]),
        "expires_at": _unix(row.expires_at),
        "finalizing_at": _unix(row.times["finalizing_at"]),
        "completed_at": _unix(row.times["completed_at"]),
        "failed_at": _unix(row.times["failed_at"]),
        "expired_at": _unix(row.times["expired_at"]) if row.status == "expired" else None,
        "cancelling_at": _unix(row.times["cancelling_at"]),
        "cancelled_at": _unix(row.times["cancelled_at"]),
        "request_counts": {
            "total": row.total,
            "completed": row.succeeded,
            "failed": row.done - row.succeeded,
        },
        "metadata": None if row.metadata is None else orjson.loads(row.metadata),
        "cost": format_credits(row.cost),
    }


@router.post("")
async def create(request: Request, key: CurrentKey) -> JSONResponse:
    body = await parse_body(request, BatchCreate)
    row = await batches_of(request).create(
        key, body.input_file_id, body.endpoint, body.completion_window, body.metadata
    )
    return JSONResponse(batch_object(row))


@router.get("")
async def listing(request: Request, key: CurrentKey) -> JSONResponse:
    after = request.query_params.get("after")
    raw = request.query_params.get("limit", "20")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer from 1 to {MAX_LIMIT}.", param="limit"
        )
    rows, more = await batches_of(request).page(key, "openai", after, int(raw))
    data = [batch_object(r) for r in rows]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


@router.get("/{batch_id}")
async def one(request: Request, key: CurrentKey, batch_id: str) -> JSONResponse:
    return JSONResponse(batch_object(await batches_of(request).get(key, batch_id, "openai")))


@router.post("/{batch_id}/cancel")
async def cancel(request: Request, key: CurrentKey, batch_id: str) -> JSONResponse:
    return JSONResponse(batch_object(await batches_of(request).cancel(key, batch_id, "openai")))

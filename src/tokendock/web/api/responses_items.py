"""GET /v1/responses/{id}/input_items (a page of a stored response's input items) and
POST /v1/responses/input_tokens (a request's input tokens, counted without generating)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from tokendock.errors import InvalidRequest
from tokendock.protocol.response_shapes import JSON
from tokendock.protocol.responses import InputTokensRequest, input_items
from tokendock.services.responses import Responses
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.responses_request import inference_request, truncated
from tokendock.web.deps import Services, parse_body, request_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def list_input_items(items: list[JSON], query: Mapping[str, str]) -> dict[str, Any]:
    """OpenAI's list page: `order` desc (the default: newest first) or asc, `limit` 1–100,
    `after` an item id of the previous page."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer from 1 to {MAX_LIMIT}.", param="limit"
        )
    limit = int(raw)
    ordered = items if order == "asc" else items[::-1]
    start = 0
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            raise InvalidRequest(f"Invalid 'after': no input item '{after}'.", param="after")
        start = ids.index(after) + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(ordered),
    }


async def input_tokens(request: Request, deps: Services, key: KeyRow, responses: Responses) -> int:
    """The request's input tokens (services/counting.py: exact for the embedded engine, an
    estimate for an upstream model); limited like a generation, not billed. The model access is
    checked before the stored conversation a `previous_response_id` names is read."""
    req = await parse_body(request, InputTokensRequest)
    req.check()
    spec = deps.counter.model(key, req.model)  # 404 / 403 / 400, before anything is read
    context = await responses.context(key.account_id, req.previous_response_id)
    items = truncated(req, [*context, *input_items(req.input)], spec)
    inference = inference_request(req, items, stream=False)
    return await deps.counter.count(key, inference, request_id(request), "input")

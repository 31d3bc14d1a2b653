"""GET /v1/responses/{id}/input_items (a page of a stored response's input items),
POST /v1/responses/input_tokens (a request's input tokens, counted without generating) and
POST /v1/responses/compact (older turns summarized into one compaction item:
services/compaction.py, run through the pipeline like any response)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tokendock.errors import InternalError, InvalidRequest
from tokendock.protocol.response_shapes import JSON
from tokendock.protocol.responses import (
    CompactRequest,
    InputTokensRequest,
    ResponseRequest,
    input_items,
)
from tokendock.services import compaction
from tokendock.services.answer import Answer
from tokendock.services.compaction import Seal
from tokendock.services.pipeline import Call
from tokendock.services.responses import Responses
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.respond import drive
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


async def input_tokens(
    request: Request,
    deps: Services,
    key: KeyRow,
    before: Callable[[ResponseRequest], Awaitable[list[JSON]]],
    seal: Seal,
) -> int:
    """The request's input tokens (services/counting.py: exact for the embedded engine, an
    estimate for an upstream model); limited like a generation, not billed. The model access is
    checked before the stored items `before` reads (a previous response's, a conversation's)."""
    req = await parse_body(request, InputTokensRequest)
    req.check()
    spec = deps.counter.model(key, req.model)  # 404 / 403 / 400, before anything is read
    context = await before(req)
    items = truncated(req, [*context, *input_items(req.input)], spec)
    opened = seal.opened(key.account_id, items)
    inference = inference_request(req, items, stream=False, opened=opened)
    return await deps.counter.count(key, inference, request_id(request), "input")


async def compact(
    request: Request, deps: Services, key: KeyRow, responses: Responses, seal: Seal
) -> Response:
    """The input (after `previous_response_id`'s history) with its older turns replaced by
    one compaction item whose summary the model writes — admitted, held and billed like a
    response (usage endpoint "responses.compact"); every compaction item it reads is checked
    first (a 400 naming `input`, nothing billed)."""
    req = await parse_body(request, CompactRequest)
    req.check()
    context = await responses.context(key.account_id, req.previous_response_id)
    items = [*context, *input_items(req.input)]
    opened = seal.opened(key.account_id, items)
    older, kept = compaction.split(items)
    text = compaction.transcript(older, opened, req.instructions)
    inference = compaction.summary_request(req.model, text, req.max_output_tokens)

    async def render(call: Call, answer: Answer) -> bytes:
        summary = answer.choices[0].text if answer.choices else ""
        item = compaction.compaction_item(seal, key.account_id, summary, req.model)
        tally = call.tally
        usage = (
            (0, 0, 0)
            if tally is None
            else (
                tally.prompt_tokens,
                tally.completion_tokens,
                tally.cached_tokens,
            )
        )
        return orjson.dumps(compaction.compacted(item, kept, usage))

    return await drive(
        request, deps, key, inference, read=Call.collect, render=render, stream=_never
    )


async def _never(call: Call) -> AsyncIterator[bytes]:
    """A compaction is never streamed (its request says so): no stream to render."""
    raise InternalError("A compaction is not streamed.")
    yield b""  # pragma: no cover  (makes this an async generator)

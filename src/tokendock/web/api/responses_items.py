"""GET /v1/responses/{id}/input_items (a page of a stored response's input items) and
POST /v1/responses/input_tokens (a request's input tokens, counted without generating)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from tokendock.errors import InvalidRequest, ModelNotAllowed, ModelNotFound, ModelNotReady
from tokendock.inference.spill import embedded_of
from tokendock.inference.templates import ChatTemplateError
from tokendock.inference.tools import offer
from tokendock.protocol.response_shapes import JSON
from tokendock.protocol.responses import InputTokensRequest, input_items
from tokendock.services.responses import Responses
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.responses_request import inference_request, truncated
from tokendock.web.deps import Services, parse_body, request_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
CHARS_PER_TOKEN = 4  # the estimate for an upstream model (as upstream_backend.py estimates)


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
    """Exact for the embedded engine (its tokenizer, the prompt the engine would read, tools
    included); an estimate (characters / 4 of the chat request) for an upstream model."""
    req = await parse_body(request, InputTokensRequest)
    req.check()
    await deps.pipeline.gate.request_only(key, request_id(request))  # the key's RPM: 429
    if not deps.directory.enabled(req.model):
        raise ModelNotFound(req.model)
    if key.allowed_models is not None and req.model not in key.allowed_models:
        raise ModelNotAllowed(f"This API key may not use the model '{req.model}'.", param="model")
    backend = deps.models.backend(req.model)
    if backend.spec.task == "embedding":
        raise InvalidRequest(
            f"The model '{req.model}' is an embedding model: it has no input tokens to count here.",
            param="model",
            code="model_not_supported",
        )
    context: list[JSON] = []
    if req.previous_response_id is not None:
        previous = await responses.get(
            key.account_id, req.previous_response_id, param="previous_response_id"
        )
        context = previous.history()
    items = truncated(req, [*context, *input_items(req.input)], backend.spec)
    inference = inference_request(req, items, stream=False)
    backend.bound(inference)  # the same 400s as a create (schemas the grammar cannot follow)
    local = embedded_of(backend)
    if local is None:
        return math.ceil(inference.body_bytes / CHARS_PER_TOKEN)
    if not local.ready:
        raise ModelNotReady(f"The model '{req.model}' is still loading.")
    try:
        tokens = await local.engine.tokenize_chat(offer(inference.turns, inference.tools))
    except ChatTemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the input: {exc}", param="input"
        ) from exc
    return len(tokens)

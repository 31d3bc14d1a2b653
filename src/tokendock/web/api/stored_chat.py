"""Stored chat completions (OpenAI's API): POST /v1/chat/completions with `store: true` keeps
the request and its answer (`keeping`, handed to the chat endpoint); these routes list, read,
relabel and delete them, for the key's account only (services/stored_chat.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request

from tokendock.errors import InvalidRequest
from tokendock.protocol.chat import ChatCompletionRequest, Message
from tokendock.protocol.stored import (
    MAX_KEY_CHARS,
    MAX_LIST,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    ChatCompletionUpdateRequest,
)
from tokendock.storage.accounts import KeyRow
from tokendock.web.api.respond import Keep
from tokendock.web.deps import CurrentKey, Deps, Services, parse_body
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1/chat/completions")

Limit = Annotated[int, Query(ge=1, le=MAX_LIST)]
Order = Annotated[Literal["asc", "desc"], Query()]
After = Annotated[str | None, Query(max_length=200)]


async def keeping(
    deps: Services, key: KeyRow, req: ChatCompletionRequest, body: bytes
) -> Keep | None:
    """What stores this request's answer when it asks `store: true` (else None: nothing more
    is done for the request). Before admission: a 400 `storage_quota_exceeded` when the
    messages alone would pass the account's storage quota."""
    if req.store is not True:
        return None
    messages = orjson.dumps([defined_fields(m) for m in req.messages]).decode()
    meta = req.metadata
    await deps.stored_chats.check_quota(key.account_id, messages, meta)

    async def keep(completion: dict[str, Any]) -> None:
        await deps.stored_chats.keep(key, messages, meta, completion)

    return keep


PART_FIELDS = ("type", "text", "refusal", "image_url", "input_audio", "file")
CALL_FIELDS = ("id", "type", "function")


def defined_fields(message: Message) -> dict[str, Any]:
    """A request message as stored: only the fields the API defines (what the model reads),
    never whatever else a client put in it."""
    out: dict[str, Any] = {"role": message.role}
    content = message.content
    if isinstance(content, list):
        parts = []
        for part in content:
            given = {"type": part.type, "text": part.text, **(part.model_extra or {})}
            parts.append({k: given[k] for k in PART_FIELDS if given.get(k) is not None})
        out["content"] = parts
    else:
        out["content"] = content
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [_call(c) for c in message.tool_calls]
    return out


def _call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function")
    kept: dict[str, Any] = {k: call[k] for k in CALL_FIELDS[:2] if k in call}
    if isinstance(fn, dict):
        kept["function"] = {k: fn[k] for k in ("name", "arguments") if k in fn}
    return kept


@router.get("")
async def list_completions(
    request: Request,
    deps: Deps,
    key: CurrentKey,
    model: Annotated[str | None, Query(max_length=200)] = None,
    after: After = None,
    limit: Limit = 20,
    order: Order = "asc",
) -> JSONResponse:
    meta = _metadata_filters(request)
    found = await deps.stored_chats.list(
        key, model=model, meta=meta, after=after, limit=limit, order=order
    )
    return JSONResponse(found)


@router.get("/{completion_id}")
async def get_completion(completion_id: str, deps: Deps, key: CurrentKey) -> JSONResponse:
    return JSONResponse(await deps.stored_chats.get(key, completion_id))


@router.post("/{completion_id}")
async def update_completion(
    completion_id: str, request: Request, deps: Deps, key: CurrentKey
) -> JSONResponse:
    body = await parse_body(request, ChatCompletionUpdateRequest)
    return JSONResponse(await deps.stored_chats.update(key, completion_id, body.metadata))


@router.delete("/{completion_id}")
async def delete_completion(completion_id: str, deps: Deps, key: CurrentKey) -> JSONResponse:
    return JSONResponse(await deps.stored_chats.delete(key, completion_id))


@router.get("/{completion_id}/messages")
async def list_messages(
    completion_id: str,
    deps: Deps,
    key: CurrentKey,
    after: After = None,
    limit: Limit = 20,
    order: Order = "asc",
) -> JSONResponse:
    found = await deps.stored_chats.messages(
        key, completion_id, after=after, limit=limit, order=order
    )
    return JSONResponse(found)


def _metadata_filters(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters (OpenAI's deepObject form): every pair must match."""
    meta: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name == "metadata":
            raise InvalidRequest(
                "Invalid 'metadata': filter as metadata[key]=value.", param="metadata"
            )
        if not (name.startswith("metadata[") and name.endswith("]")):
            continue
        field = name[len("metadata[") : -1]
        if len(field) > MAX_KEY_CHARS or len(value) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"Invalid '{name}': keys have at most {MAX_KEY_CHARS} characters and values "
                f"at most {MAX_VALUE_CHARS}.",
                param="metadata",
            )
        meta[field] = value
    if len(meta) > MAX_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': at most {MAX_PAIRS} filters are allowed.", param="metadata"
        )
    return meta

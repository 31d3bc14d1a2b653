"""Stored chat completions (`store: true`): the `metadata` object, the update body, and the
shapes of what the stored-completion endpoints answer (OpenAI's)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_PAIRS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512  # OpenAI's limits
MAX_ID_CHARS = 64
# A stored object's id (responses, their items, stored completions): what the server mints and
# all a client may name. Anything else in a path or a field is "not found" before any query —
# a NUL, say, is refused by PostgreSQL even in a WHERE clause.
OBJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def is_object_id(value: str) -> bool:
    return OBJECT_ID.fullmatch(value) is not None


def storable_text(value: str) -> bool:
    """No NUL (PostgreSQL text cannot hold it) and no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bounded(meta: dict[str, str]) -> dict[str, str]:
    """OpenAI's bounds on `metadata`; every failure is a 400 naming `metadata`."""
    if len(meta) > MAX_PAIRS:
        raise ValueError(f"at most {MAX_PAIRS} key-value pairs are allowed, got {len(meta)}")
    for key, value in meta.items():
        if len(key) > MAX_KEY_CHARS:
            raise ValueError(f"keys are at most {MAX_KEY_CHARS} characters (got {len(key)})")
        if len(value) > MAX_VALUE_CHARS:
            raise ValueError(
                f"the value of '{key}' has {len(value)} characters; at most {MAX_VALUE_CHARS} "
                "are allowed"
            )
        if not (storable_text(key) and storable_text(value)):
            raise ValueError("keys and values cannot hold NUL characters or lone surrogates")
    return meta


Metadata = Annotated[dict[str, str], AfterValidator(_bounded)]
MAX_LIST = 100  # a page of a list: 1 … 100 items (OpenAI's bound), 20 when not asked


class ChatCompletionUpdateRequest(BaseModel):
    """POST /v1/chat/completions/{completion_id}: only `metadata` can change (null clears it)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    metadata: Metadata | None


def page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def deleted(completion_id: str) -> dict[str, Any]:
    return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}


def store_message(completion_id: str, index: int, message: dict[str, Any]) -> dict[str, Any]:
    """One message of a stored request, as `ChatCompletionStoreMessage`: text content (a
    content-parts array also as `content_parts`), its role, name and tool calls."""
    content = message.get("content")
    parts = content if isinstance(content, list) else None
    if parts is not None:
        texts = [p.get("text") or "" for p in parts if isinstance(p, dict)]
        content = "".join(texts)
    out: dict[str, Any] = {
        "id": f"{completion_id}-{index}",
        "role": message.get("role"),
        "content": content,
        "refusal": message.get("refusal"),
        "content_parts": parts,
    }
    for name in ("name", "tool_calls", "tool_call_id", "function_call"):
        if message.get(name) is not None:
            out[name] = message[name]
    return out


MAX_CONVERSATION_ITEMS = 20  # items added by one call (OpenAI's bound)


class ConversationCreateRequest(BaseModel):
    """POST /v1/conversations: optional initial `items` (Responses input items, at most 20)
    and `metadata`. Unknown fields are accepted and ignored (`safety_identifier`)."""

    model_config = ConfigDict(strict=True, extra="ignore")
    list_bounds: ClassVar[dict[str, int]] = {"items": MAX_CONVERSATION_ITEMS}

    items: Annotated[list[dict[str, Any]], Field(max_length=MAX_CONVERSATION_ITEMS)] | None = None
    metadata: Metadata | None = None


class ConversationUpdateRequest(BaseModel):
    """POST /v1/conversations/{id}: only `metadata` can change (null clears it)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    metadata: Metadata | None


class ConversationItemsRequest(BaseModel):
    """POST /v1/conversations/{id}/items: 1 to 20 items appended."""

    model_config = ConfigDict(strict=True, extra="ignore")
    list_bounds: ClassVar[dict[str, int]] = {"items": MAX_CONVERSATION_ITEMS}

    items: Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_CONVERSATION_ITEMS)]

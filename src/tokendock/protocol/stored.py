"""Stored chat completions (`store: true`): the `metadata` object, the update body, and the
shapes of what the stored-completion endpoints answer (OpenAI's)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_PAIRS, MAX_KEY_CHARS, MAX_VALUE_CHARS = 16, 64, 512  # OpenAI's limits
NO_NUL = r"^[^\x00]*$"  # a NUL character cannot be stored (PostgreSQL text)
Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_KEY_CHARS, pattern=NO_NUL)],
        Annotated[str, Field(max_length=MAX_VALUE_CHARS, pattern=NO_NUL)],
    ],
    Field(max_length=MAX_PAIRS),
]
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

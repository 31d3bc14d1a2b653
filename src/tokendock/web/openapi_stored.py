"""The stored chat completions' operations and shapes in /openapi.json (web/openapi.py merges
them): list, retrieve, update, delete, and the stored request's messages."""

from __future__ import annotations

from typing import Any, Protocol

from tokendock.protocol.stored import (
    MAX_KEY_CHARS,
    MAX_LIST,
    MAX_PAIRS,
    MAX_VALUE_CHARS,
    ChatCompletionUpdateRequest,
)
from tokendock.web.openapi_shapes import NULL_STRING, STRING, Schema, const, obj

Operation = dict[str, Any]


class Make(Protocol):
    """openapi.py's operation builder: summary, the 200 body's schema name, error statuses."""

    def __call__(
        self,
        summary: str,
        ok: str,
        errors: tuple[str, ...],
        *,
        body: str | None = None,
        parameters: list[dict[str, Any]] | None = None,
    ) -> Operation: ...


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


COMPLETION_ID = {
    "name": "completion_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
PAGE = [
    _query("after", {"type": "string", "maxLength": 200}, "The last id of the previous page."),
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 20},
        "Items per page.",
    ),
    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "By time."),
]
METADATA_FILTER = {
    **_query(
        "metadata",
        {
            "type": "object",
            "maxProperties": MAX_PAIRS,
            "propertyNames": {"maxLength": MAX_KEY_CHARS},
            "additionalProperties": {"type": "string", "maxLength": MAX_VALUE_CHARS},
        },
        "Only those with every pair: `metadata[key]=value`.",
    ),
    "style": "deepObject",
    "explode": True,
}
MODEL_FILTER = _query("model", {"type": "string", "maxLength": 200}, "Only this model's.")


def paths(make: Make) -> dict[str, dict[str, Operation]]:
    one = [COMPLETION_ID]
    return {
        "/v1/chat/completions": {
            "get": make(
                "Stored chat completions (`store: true`) of the key's account",
                "ChatCompletionList",
                ("400", "401"),
                parameters=[MODEL_FILTER, METADATA_FILTER, *PAGE],
            )
        },
        "/v1/chat/completions/{completion_id}": {
            "get": make(
                "A stored chat completion",
                "StoredChatCompletion",
                ("401", "404"),
                parameters=one,
            ),
            "post": make(
                "Replace a stored chat completion's metadata",
                "StoredChatCompletion",
                ("400", "401", "404", "413"),
                body="ChatCompletionUpdateRequest",
                parameters=one,
            ),
            "delete": make(
                "Delete a stored chat completion",
                "ChatCompletionDeleted",
                ("401", "404"),
                parameters=one,
            ),
        },
        "/v1/chat/completions/{completion_id}/messages": {
            "get": make(
                "The messages of a stored chat completion's request",
                "ChatCompletionMessageList",
                ("400", "401", "404"),
                parameters=[*one, *PAGE],
            )
        },
    }


def _list(item: Schema) -> Schema:
    return obj(
        {
            "object": const("list"),
            "data": {"type": "array", "items": item},
            "first_id": NULL_STRING,
            "last_id": NULL_STRING,
            "has_more": {"type": "boolean"},
        }
    )


STORED: Schema = {
    "allOf": [
        {"$ref": "#/components/schemas/ChatCompletion"},
        obj({"metadata": {"type": "object", "additionalProperties": STRING}}),
    ]
}
MESSAGE: Schema = obj(
    {
        "id": STRING,
        "role": STRING,
        "content": NULL_STRING,
        "refusal": NULL_STRING,
        "content_parts": {"type": ["array", "null"]},
    },
    required=["id", "role", "content"],
)


def schemas() -> dict[str, Schema]:
    update = ChatCompletionUpdateRequest.model_json_schema(mode="validation")
    return {
        "ChatCompletionUpdateRequest": update,
        "StoredChatCompletion": STORED,
        "ChatCompletionList": _list({"$ref": "#/components/schemas/StoredChatCompletion"}),
        "ChatCompletionDeleted": obj(
            {"id": STRING, "object": const("chat.completion.deleted"), "deleted": const_true()}
        ),
        "ChatCompletionMessageList": _list(MESSAGE),
    }


def const_true() -> Schema:
    return {"type": "boolean", "const": True}

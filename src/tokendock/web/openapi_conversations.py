"""The Conversations API's operations and shapes in /openapi.json (web/openapi.py merges them):
conversations (create, retrieve, update, delete) and their items (list, append, retrieve,
delete), as web/api/conversations.py serves them."""

from __future__ import annotations

from typing import Any

from tokendock.protocol.stored import (
    MAX_LIST,
    ConversationCreateRequest,
    ConversationItemsRequest,
    ConversationUpdateRequest,
)
from tokendock.web.openapi_responses import ITEM
from tokendock.web.openapi_shapes import (
    INTEGER,
    NULL_STRING,
    STRING,
    Schema,
    const,
    obj,
    request_schemas,
)
from tokendock.web.openapi_stored import Make

CONVERSATION: Schema = obj(
    {
        "id": {"type": "string", "pattern": "^conv_"},
        "object": const("conversation"),
        "created_at": INTEGER,
        "metadata": {"type": "object", "additionalProperties": STRING},
    }
)
DELETED: Schema = obj(
    {"id": STRING, "object": const("conversation.deleted"), "deleted": {"const": True}}
)
ITEM_LIST: Schema = obj(
    {
        "object": const("list"),
        "data": {"type": "array", "items": ITEM},
        "first_id": NULL_STRING,
        "last_id": NULL_STRING,
        "has_more": {"type": "boolean"},
    }
)


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


def _query(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


CONVERSATION_ID = _path("conversation_id")
ITEM_ID = _path("item_id")
PAGE = [
    _query("after", STRING),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 20}),
    _query("order", {"enum": ["asc", "desc"], "default": "desc"}),
    {
        **_query("include", {"type": "array", "items": STRING}),
        "description": "Accepted; no item here has more to include.",
    },
]


def paths(make: Make) -> dict[str, dict[str, Any]]:
    one = [CONVERSATION_ID]
    item = [CONVERSATION_ID, ITEM_ID]
    return {
        "/v1/conversations": {
            "post": make(
                "Create a conversation (optional items, metadata)",
                "Conversation",
                ("400", "401"),
                body="ConversationCreateRequest",
            )
        },
        "/v1/conversations/{conversation_id}": {
            "get": make(
                "A conversation (the account's own)", "Conversation", ("401", "404"), parameters=one
            ),
            "post": make(
                "Update a conversation's metadata",
                "Conversation",
                ("400", "401", "404"),
                body="ConversationUpdateRequest",
                parameters=one,
            ),
            "delete": make(
                "Delete a conversation and its items",
                "ConversationDeleted",
                ("401", "404"),
                parameters=one,
            ),
        },
        "/v1/conversations/{conversation_id}/items": {
            "get": make(
                "A conversation's items, paginated",
                "ConversationItemList",
                ("400", "401", "404"),
                parameters=[*one, *PAGE],
            ),
            "post": make(
                "Append 1 to 20 items to a conversation",
                "ConversationItemList",
                ("400", "401", "404"),
                body="ConversationItemsRequest",
                parameters=one,
            ),
        },
        "/v1/conversations/{conversation_id}/items/{item_id}": {
            "get": make(
                "One item of a conversation", "ConversationItem", ("401", "404"), parameters=item
            ),
            "delete": make(
                "Delete an item (answers the conversation)",
                "Conversation",
                ("401", "404"),
                parameters=item,
            ),
        },
    }


def schemas() -> dict[str, Schema]:
    out = request_schemas(
        ConversationCreateRequest, ConversationUpdateRequest, ConversationItemsRequest
    )
    return {
        **out,
        "Conversation": CONVERSATION,
        "ConversationDeleted": DELETED,
        "ConversationItem": ITEM,
        "ConversationItemList": ITEM_LIST,
    }

"""The Responses API's part of /openapi.json (web/openapi.py adds it): its operations, request
bodies (the pydantic models the endpoints validate with) and response bodies (written out to
match protocol/response_shapes.py; schemathesis checks them in `make test`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokendock.protocol.responses import CompactRequest, InputTokensRequest, ResponseRequest
from tokendock.web.openapi_shapes import (
    INTEGER,
    NULL_STRING,
    STRING,
    Schema,
    const,
    obj,
    request_schemas,
)

Operation = Callable[..., dict[str, Any]]
NULL_OBJECT: Schema = {"type": ["object", "null"]}

RESPONSE_USAGE: Schema = obj(
    {
        "input_tokens": INTEGER,
        "input_tokens_details": obj({"cached_tokens": INTEGER}),
        "output_tokens": INTEGER,
        "output_tokens_details": obj({"reasoning_tokens": INTEGER}),
        "total_tokens": INTEGER,
    }
)
ITEM: Schema = {
    "type": "object",
    "description": "`message` (content parts with `text`), `function_call` (`call_id`, `name`, "
    "`arguments`), `function_call_output` (`call_id`, `output`) or `compaction` "
    "(`encrypted_content`).",
    "properties": {
        "id": STRING,
        "type": {"enum": ["message", "function_call", "function_call_output", "compaction"]},
        "status": STRING,
    },
    "required": ["id", "type"],
}
RESPONSE: Schema = obj(
    {
        "id": {"type": "string", "pattern": "^resp_"},
        "object": const("response"),
        "created_at": INTEGER,
        "status": {
            "enum": ["completed", "incomplete", "in_progress", "queued", "cancelled", "failed"]
        },
        "background": {"type": "boolean"},
        "error": NULL_OBJECT,
        "incomplete_details": NULL_OBJECT,
        "instructions": NULL_STRING,
        "model": STRING,
        "output": {"type": "array", "items": ITEM},
        "previous_response_id": NULL_STRING,
        "conversation": {"anyOf": [obj({"id": STRING}), {"type": "null"}]},
        "store": {"type": "boolean"},
        "usage": {"anyOf": [RESPONSE_USAGE, {"type": "null"}]},
        "metadata": {"type": "object", "additionalProperties": STRING},
    },
    required=["id", "object", "created_at", "status", "model", "output", "metadata"],
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
DELETED: Schema = obj({"id": STRING, "object": const("response"), "deleted": {"const": True}})
COMPACTED: Schema = obj(
    {
        "id": STRING,
        "object": const("response.compaction"),
        "created_at": INTEGER,
        "output": {"type": "array", "items": ITEM},
        "usage": RESPONSE_USAGE,
    }
)
INPUT_TOKENS: Schema = obj({"object": const("response.input_tokens"), "input_tokens": INTEGER})

IDEMPOTENCY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body replays the first answer.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": STRING}
PAGE = [
    {"name": "after", "in": "query", "required": False, "schema": STRING},
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    },
    {
        "name": "order",
        "in": "query",
        "required": False,
        "schema": {"enum": ["asc", "desc"], "default": "desc"},
    },
]


def paths(create: dict[str, Any], operation: Operation, ok: Operation) -> dict[str, Any]:
    """`create`: the POST /v1/responses operation (a generation, built by openapi.py);
    `operation(summary, ok, errors, body=…, parameters=…)` and `ok(content)` its builders."""

    def json(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    def stored(summary: str, name: str, errors: tuple[str, ...], **more: Any) -> dict[str, Any]:
        parameters = [RESPONSE_ID, *more.pop("parameters", [])]
        return operation(summary, ok(json(name)), errors, parameters=parameters, **more)

    return {
        "/v1/responses": {"post": create},
        "/v1/responses/input_tokens": {
            "post": operation(
                "Count a Responses request's input tokens (nothing is generated)",
                ok(json("ResponseInputTokens")),
                ("400", "401", "403", "404", "413", "503"),
                body="InputTokensRequest",
            )
        },
        "/v1/responses/compact": {
            "post": operation(
                "Compact a conversation: older turns become one compaction item (billed)",
                ok(json("CompactedResponse")),
                ("400", "401", "402", "403", "404", "413", "429", "503"),
                body="CompactRequest",
                parameters=[IDEMPOTENCY],
            )
        },
        "/v1/responses/{response_id}": {
            "get": stored("A stored response (the account's own)", "Response", ("401", "404")),
            "delete": stored("Delete a stored response", "ResponseDeleted", ("401", "404")),
        },
        "/v1/responses/{response_id}/input_items": {
            "get": stored(
                "A stored response's input items, paginated",
                "ResponseItemList",
                ("400", "401", "404"),
                parameters=PAGE,
            )
        },
        "/v1/responses/{response_id}/cancel": {
            "post": stored(
                "Cancel a background response (billed for what was generated)",
                "Response",
                ("400", "401", "404"),
            )
        },
    }


def schemas() -> dict[str, Schema]:
    out = request_schemas(ResponseRequest, InputTokensRequest, CompactRequest)
    return {
        **out,
        "Response": RESPONSE,
        "ResponseItemList": ITEM_LIST,
        "ResponseDeleted": DELETED,
        "ResponseInputTokens": INPUT_TOKENS,
        "CompactedResponse": COMPACTED,
    }

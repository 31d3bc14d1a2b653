"""Anthropic's Messages API in /openapi.json (web/openapi.py merges these): POST /v1/messages and
POST /v1/messages/count_tokens, their request schemas (the pydantic models the routes validate
with), their response shapes and Anthropic's error envelope (protocol/messages.py)."""

from __future__ import annotations

from typing import Any

from tokendock.protocol.messages import ERROR_TYPES, MessagesInput, MessagesRequest
from tokendock.web.openapi_shapes import (
    INTEGER,
    NULL_STRING,
    STRING,
    Schema,
    const,
    obj,
    request_schemas,
)

ERRORS = {
    "400": "invalid_request_error (also a body that is not valid JSON).",
    "401": "authentication_error: missing, unknown, revoked or expired key.",
    "402": "billing_error: the credit balance (or the key's spend limit) does not cover it.",
    "403": "permission_error: this key may not use this model.",
    "404": "not_found_error: unknown model.",
    "413": "request_too_large: the body is over the server's limit.",
    "429": "rate_limit_error: see `retry-after`.",
    "502": "api_error: an upstream deployment failed.",
    "504": "timeout_error: an upstream deployment timed out.",
    "529": "overloaded_error: the model is loading, or no upstream deployment is healthy.",
}
AUTH = (
    "The API key in `x-api-key` (as Anthropic's SDKs send it) or `Authorization: Bearer`; "
    "`anthropic-version` is accepted, whatever its value."
)

TEXT_BLOCK: Schema = obj({"type": const("text"), "text": STRING})
TOOL_USE_BLOCK: Schema = obj(
    {
        "type": const("tool_use"),
        "id": {"type": "string", "pattern": "^toolu_"},
        "name": STRING,
        "input": {"type": "object"},
    }
)
STOP_REASON: Schema = {
    "type": ["string", "null"],
    "enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", None],
}
MESSAGE: Schema = obj(
    {
        "id": {"type": "string", "pattern": "^msg_"},
        "type": const("message"),
        "role": const("assistant"),
        "model": STRING,
        "content": {"type": "array", "items": {"oneOf": [TEXT_BLOCK, TOOL_USE_BLOCK]}},
        "stop_reason": STOP_REASON,
        "stop_sequence": NULL_STRING,
        # input_tokens: the prompt tokens NOT read from the prefix cache (as Anthropic counts)
        "usage": obj(
            {
                "input_tokens": INTEGER,
                "cache_creation_input_tokens": INTEGER,
                "cache_read_input_tokens": INTEGER,
                "output_tokens": INTEGER,
            }
        ),
    }
)
ERROR: Schema = obj(
    {
        "type": const("error"),
        "error": obj(
            {
                "type": {"type": "string", "enum": sorted(set(ERROR_TYPES.values()))},
                "message": STRING,
            }
        ),
    }
)
SSE_EVENT: Schema = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {
            "type": "string",
            "description": "message_start, content_block_start, content_block_delta, "
            "content_block_stop, message_delta, message_stop, ping, or error.",
        },
        "data": {"type": "string", "description": "The event as JSON; its `type` is the name."},
    },
}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _operation(
    summary: str,
    body: str,
    ok: dict[str, Any],
    headers: dict[str, Any],
    retry_headers: dict[str, Any],
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for code, description in ERRORS.items():
        error = {"description": description, "headers": headers, "content": _json("AnthropicError")}
        if code in ("429", "529"):
            error["headers"] = {**headers, **retry_headers}
        responses[code] = error
    responses["default"] = {
        "description": "Any other error, in the same envelope.",
        "headers": headers,
        "content": _json("AnthropicError"),
    }
    return {
        "summary": summary,
        "description": AUTH,
        "security": [{"apiKey": []}],
        "requestBody": {"required": True, "content": _json(body)},
        "responses": responses,
    }


def paths(
    headers: dict[str, Any], billing_headers: dict[str, Any], retry_headers: dict[str, Any]
) -> dict[str, Any]:
    """The two operations; `headers` (x-request-id), `billing_headers` (cost, rate limits) and
    `retry_headers` are openapi.py's, as its other generation endpoints document them."""
    content = {**_json("AnthropicMessage"), "text/event-stream": {"schema": SSE_EVENT}}
    message = _operation(
        "Anthropic Messages API: a message (billed like a chat completion)",
        "MessagesRequest",
        {
            "description": "The message, or Anthropic's named events when `stream` is true.",
            "headers": {**headers, **billing_headers},
            "content": content,
        },
        headers,
        retry_headers,
    )
    count = _operation(
        "Anthropic Messages API: the input tokens of a request (not billed)",
        "MessagesInput",
        {"description": "OK", "headers": headers, "content": _json("AnthropicTokenCount")},
        headers,
        retry_headers,
    )
    return {"/v1/messages": {"post": message}, "/v1/messages/count_tokens": {"post": count}}


def schemas() -> dict[str, Schema]:
    out = request_schemas(MessagesRequest, MessagesInput)
    out["AnthropicMessage"] = MESSAGE
    out["AnthropicTokenCount"] = obj({"input_tokens": INTEGER})
    out["AnthropicError"] = ERROR
    return out

"""JSON Schemas of TokenDock's response bodies, for the OpenAPI document (openapi.py).

Written out by hand because the endpoints build their bodies as dicts (protocol/*.py): keep
these in step with those functions. Schemathesis checks every response against them in
`make test` (tests/e2e/test_schemathesis.py), so a drift fails a test.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NULL_STRING: Schema = {"type": ["string", "null"]}
NULL_INTEGER: Schema = {"type": ["integer", "null"]}
CREDITS: Schema = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$"}


REF = "#/components/schemas/{model}"


def request_schemas(*models: type[BaseModel]) -> dict[str, Schema]:
    """The JSON Schemas of request models (as validated), each under its class name, with the
    definitions they share; references point into components/schemas."""
    pairs = [(m, "validation") for m in models]
    keyed, defs = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    out: dict[str, Schema] = dict(defs.get("$defs", {}))
    for (model, _), schema in keyed.items():
        out.setdefault(model.__name__, schema)
    return out


def obj(properties: Schema, required: list[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def const(value: str) -> Schema:
    return {"type": "string", "const": value}


ERROR: Schema = obj(
    {
        "error": obj(
            {
                "message": STRING,
                "type": STRING,
                "param": NULL_STRING,
                "code": NULL_STRING,
            }
        )
    }
)

USAGE: Schema = obj(
    {
        "prompt_tokens": INTEGER,
        "completion_tokens": INTEGER,
        "total_tokens": INTEGER,
        "prompt_tokens_details": obj({"cached_tokens": INTEGER}),
        "completion_tokens_details": obj({"reasoning_tokens": INTEGER}),
    },
    required=["prompt_tokens", "completion_tokens", "total_tokens"],
)

# The embedded engine says "stop" or "length"; an upstream model may say more ("tool_calls").
FINISH_REASON: Schema = {"type": "string", "examples": ["stop", "length"]}

TOKEN_LOGPROB: Schema = obj(
    {
        "token": STRING,
        "logprob": {"type": "number"},
        "bytes": {"type": ["array", "null"], "items": INTEGER},
    }
)
CHAT_LOGPROBS: Schema = {
    "type": ["object", "null"],
    "properties": {
        "content": {
            "type": ["array", "null"],
            "items": {
                **TOKEN_LOGPROB,
                "properties": {
                    **TOKEN_LOGPROB["properties"],
                    "top_logprobs": {"type": "array", "items": TOKEN_LOGPROB},
                },
            },
        },
        "refusal": {"type": ["array", "null"]},
    },
}
TEXT_LOGPROBS: Schema = {
    "type": ["object", "null"],
    "properties": {
        "tokens": {"type": "array", "items": STRING},
        "token_logprobs": {"type": "array", "items": {"type": ["number", "null"]}},
        "top_logprobs": {
            "type": "array",
            "items": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        },
        "text_offset": {"type": "array", "items": INTEGER},
    },
}
TOOL_CALL: Schema = obj(
    {
        "id": STRING,
        "type": const("function"),
        "function": obj({"name": STRING, "arguments": STRING}),
    }
)

CHAT_COMPLETION: Schema = obj(
    {
        "id": STRING,
        "object": const("chat.completion"),
        "created": INTEGER,
        "model": STRING,
        "system_fingerprint": NULL_STRING,
        "choices": {
            "type": "array",
            "items": obj(
                {
                    "index": INTEGER,
                    "message": obj(
                        {
                            "role": const("assistant"),
                            "content": NULL_STRING,  # null when the answer is tool calls
                            "refusal": NULL_STRING,
                            "tool_calls": {"type": "array", "items": TOOL_CALL},
                            "function_call": obj({"name": STRING, "arguments": STRING}),
                        },
                        required=["role", "content", "refusal"],
                    ),
                    "logprobs": CHAT_LOGPROBS,
                    "finish_reason": FINISH_REASON,
                }
            ),
        },
        "usage": USAGE,
    },
    required=["id", "object", "created", "model", "choices", "usage"],
)

TEXT_COMPLETION: Schema = obj(
    {
        "id": STRING,
        "object": const("text_completion"),
        "created": INTEGER,
        "model": STRING,
        "system_fingerprint": NULL_STRING,
        "choices": {
            "type": "array",
            "items": obj(
                {
                    "index": INTEGER,
                    "text": STRING,
                    "logprobs": TEXT_LOGPROBS,
                    "finish_reason": FINISH_REASON,
                }
            ),
        },
        "usage": USAGE,
    },
    required=["id", "object", "created", "model", "choices", "usage"],
)

MODEL: Schema = obj(
    {"id": STRING, "object": const("model"), "created": INTEGER, "owned_by": STRING}
)

MODEL_LIST: Schema = obj(
    {
        "object": const("list"),
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
    }
)

CREDIT_BALANCE: Schema = obj(
    {"object": const("credit_balance"), "balance": CREDITS, "balance_micro_credits": INTEGER}
)

REDEMPTION: Schema = obj({"object": const("redemption"), "amount": CREDITS, "balance": CREDITS})

USAGE_ROW: Schema = obj(
    {
        "request_id": STRING,
        "key_id": NULL_INTEGER,
        "model": STRING,
        "prompt_tokens": INTEGER,
        "unit": {
            "type": "string",
            "enum": ["token", "second", "character", "image", "request"],
            "description": "What prompt_tokens count: tokens, or the unit the model is sold by.",
        },
        "cached_tokens": INTEGER,
        "completion_tokens": INTEGER,
        "cost": CREDITS,
        "cost_micro_credits": INTEGER,
        "status": STRING,
        "finish_reason": NULL_STRING,
        "latency_ms": NULL_INTEGER,
        "ttft_ms": NULL_INTEGER,
        "user": NULL_STRING,
        "deployment": NULL_STRING,
        "estimated": {"type": "boolean"},
        "endpoint": {**NULL_STRING, "examples": ["chat.completions", "embeddings"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
    required=["request_id", "model", "cost", "cost_micro_credits", "created_at"],
)

USAGE_LIST: Schema = obj(
    {
        "object": const("list"),
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/UsageRecord"}},
    }
)

HEALTH: Schema = obj({"status": const("ok")})

READY: Schema = {
    "type": "object",
    "description": "`models` and `upstreams` only for the operator (see /metrics).",
    "properties": {
        "status": const("ready"),
        "models": {"type": "array", "items": STRING},
        "upstreams": {"type": "object", "additionalProperties": {"type": "array"}},
    },
    "required": ["status"],
}

EMBEDDING_LIST: Schema = obj(
    {
        "object": const("list"),
        "data": {
            "type": "array",
            "items": obj(
                {
                    "object": const("embedding"),
                    "index": INTEGER,
                    "embedding": {
                        "description": "Floats, or base64 of little-endian float32 bytes "
                        "(encoding_format).",
                        "anyOf": [{"type": "array", "items": {"type": "number"}}, STRING],
                    },
                }
            ),
        },
        "model": STRING,
        "usage": obj({"prompt_tokens": INTEGER, "total_tokens": INTEGER}),
    }
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "EmbeddingList": EMBEDDING_LIST,
    "Usage": USAGE,
    "ChatCompletion": CHAT_COMPLETION,
    "TextCompletion": TEXT_COMPLETION,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
    "CreditBalance": CREDIT_BALANCE,
    "Redemption": REDEMPTION,
    "UsageRecord": USAGE_ROW,
    "UsageList": USAGE_LIST,
    "Health": HEALTH,
    "Ready": READY,
}

"""OpenAI's Batch API and Anthropic's Message Batches API in /openapi.json (web/openapi.py
merges them: `paths(make, anthropic)` and `schemas()`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokendock.web.openapi_shapes import (
    CREDITS,
    INTEGER,
    NULL_INTEGER,
    NULL_STRING,
    STRING,
    Schema,
    const,
    obj,
)
from tokendock.web.openapi_stored import Make, Operation

STATUSES = [
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]
NULL_TIME: Schema = {"type": ["string", "null"]}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: Schema) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _jsonl(op: Operation) -> Operation:
    op["responses"]["200"]["content"] = {"application/x-jsonl": {"schema": {"type": "string"}}}
    return op


# Anthropic's operations: (summary, ok schema, body schema or None, parameters) → operation.
AnthropicMake = Callable[[str, str, str | None, list[dict[str, Any]]], Operation]


def paths(make: Make, anthropic: AnthropicMake) -> dict[str, dict[str, Operation]]:
    one, msg = [_path_id("batch_id")], [_path_id("message_batch_id")]
    page = [
        _query("after", STRING),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
    ]
    anthropic_page = [
        _query("after_id", STRING),
        _query("before_id", STRING),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20}),
    ]
    return {
        "/v1/batches": {
            "post": make(
                "Create a batch from an uploaded JSONL file (run by TokenDock at the batch price)",
                "Batch",
                ("400", "401", "404"),
                body="BatchCreate",
            ),
            "get": make(
                "The key's account's batches", "BatchList", ("400", "401"), parameters=page
            ),
        },
        "/v1/batches/{batch_id}": {
            "get": make("A batch", "Batch", ("401", "404"), parameters=one),
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": make("Cancel a batch", "Batch", ("401", "404"), parameters=one),
        },
        "/v1/messages/batches": {
            "post": anthropic(
                "Anthropic Message Batches: create", "MessageBatch", "MessageBatchCreate", []
            ),
            "get": anthropic(
                "Anthropic Message Batches: list", "MessageBatchList", None, anthropic_page
            ),
        },
        "/v1/messages/batches/{message_batch_id}": {
            "get": anthropic("Anthropic Message Batches: retrieve", "MessageBatch", None, msg),
            "delete": anthropic(
                "Anthropic Message Batches: delete an ended batch", "MessageBatchDeleted", None, msg
            ),
        },
        "/v1/messages/batches/{message_batch_id}/cancel": {
            "post": anthropic("Anthropic Message Batches: cancel", "MessageBatch", None, msg),
        },
        "/v1/messages/batches/{message_batch_id}/results": {
            "get": _jsonl(
                anthropic("Anthropic Message Batches: results (JSONL)", "MessageBatch", None, msg)
            ),
        },
    }


def schemas() -> dict[str, Schema]:
    times = {
        name: NULL_INTEGER
        for name in (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        )
    }
    batch = obj(
        {
            "id": STRING,
            "object": const("batch"),
            "endpoint": STRING,
            "model": NULL_STRING,
            "errors": {"type": ["object", "null"]},
            "input_file_id": NULL_STRING,
            "completion_window": const("24h"),
            "status": {"type": "string", "enum": STATUSES},
            "output_file_id": NULL_STRING,
            "error_file_id": NULL_STRING,
            "created_at": INTEGER,
            "expires_at": INTEGER,
            **times,
            "request_counts": obj({"total": INTEGER, "completed": INTEGER, "failed": INTEGER}),
            "metadata": {"type": ["object", "null"]},
            "cost": CREDITS,
        }
    )
    counts = obj(
        {k: INTEGER for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    )
    message_batch = obj(
        {
            "id": STRING,
            "type": const("message_batch"),
            "processing_status": {"type": "string", "enum": ["in_progress", "canceling", "ended"]},
            "request_counts": counts,
            "ended_at": NULL_TIME,
            "created_at": STRING,
            "expires_at": STRING,
            "cancel_initiated_at": NULL_TIME,
            "archived_at": NULL_TIME,
            "results_url": NULL_TIME,
        }
    )
    return {
        "BatchCreate": obj(
            {
                "input_file_id": {"type": "string", "maxLength": 200},
                "endpoint": {"type": "string", "enum": ENDPOINTS},
                "completion_window": const("24h"),
                "metadata": {
                    "type": ["object", "null"],
                    "maxProperties": 16,
                    "additionalProperties": {"type": "string", "maxLength": 512},
                },
            },
            required=["input_file_id", "endpoint", "completion_window"],
        ),
        "Batch": batch,
        "BatchList": obj(
            {
                "object": const("list"),
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/Batch"}},
                "first_id": NULL_STRING,
                "last_id": NULL_STRING,
                "has_more": {"type": "boolean"},
            }
        ),
        "MessageBatchCreate": obj(
            {
                "requests": {
                    "type": "array",
                    "minItems": 1,
                    "items": obj(
                        {
                            "custom_id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                            # Checked when the request runs: an invalid one is an errored
                            # result, the batch goes on (Anthropic's behaviour).
                            "params": {"type": "object"},
                        }
                    ),
                }
            }
        ),
        "MessageBatch": message_batch,
        "MessageBatchDeleted": obj({"id": STRING, "type": const("message_batch_deleted")}),
        "MessageBatchList": obj(
            {
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/MessageBatch"}},
                "has_more": {"type": "boolean"},
                "first_id": NULL_STRING,
                "last_id": NULL_STRING,
            }
        ),
    }

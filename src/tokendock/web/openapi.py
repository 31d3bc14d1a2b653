"""GET /openapi.json: TokenDock's HTTP API as an OpenAPI 3.1 document.

FastAPI cannot describe this API by itself: the hot endpoints are plain Starlette routes, the
request bodies are parsed by hand (`parse_body`, for OpenAI-style 400s) and the API key is read
by a dependency FastAPI does not know as a security scheme. So the document is assembled here:
request bodies from the very pydantic models the endpoints validate with (protocol/), response
bodies from openapi_shapes.py, and a bearer scheme. `make test` runs schemathesis against it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock import __version__
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.protocol.common import MAX_TOKEN_ID_DIGITS
from tokendock.protocol.completions import CompletionRequest
from tokendock.protocol.embeddings import EmbeddingRequest
from tokendock.web import (
    openapi_batches,
    openapi_conversations,
    openapi_files,
    openapi_media,
    openapi_messages,
    openapi_responses,
    openapi_stored,
)
from tokendock.web.api.account import RedeemRequest
from tokendock.web.openapi_shapes import SCHEMAS, STRING, Schema, request_schemas
from tokendock.web.responses import JSONResponse

BEARER: list[dict[str, list[str]]] = [{"apiKey": []}]
ERRORS = {
    "400": "Invalid request: `error.param` names the field.",
    "401": "Missing, unknown, revoked or expired API key.",
    "402": "The credit balance (or the key's spend limit) does not cover the request.",
    "403": "This key may not use this model.",
    "404": "Unknown model, or unknown URL.",
    "409": "This Idempotency-Key's request is still running, or was a stream (not replayed).",
    "413": "Request body over the server's limit.",
    "429": "Rate limit: see `retry-after`.",
    "502": "An upstream deployment failed.",
    "503": "Model not ready or unpriced, or no healthy upstream deployment.",
    "504": "An upstream deployment timed out.",
}
REQUEST_ID = {
    "description": "Names the request in the server's log: quote it when reporting a problem.",
    "required": True,
    "schema": {"type": "string", "pattern": "^req_[0-9a-f]{32}$"},
}
HEADERS = {"x-request-id": {"$ref": "#/components/headers/RequestId"}}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": HEADERS,
        "content": _json("Error"),
    }


def _ok(content: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "headers": HEADERS, "content": content}


def _operation(
    summary: str,
    ok: dict[str, Any],
    errors: tuple[str, ...],
    *,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    responses.update({code: _error(ERRORS[code]) for code in errors})
    responses["default"] = _error("Any other error, in the same envelope.")
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    op["security"] = BEARER if security is None else security
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


# OpenAPI 3.1 has `schema` of an event stream describe each event.
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "A chunk as JSON (the `object` says which), an error envelope, "
            "or `[DONE]` last.",
        },
        "event": {"type": "string"},
    },
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A retry with the same key and body replays the first answer (not streams).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
GENERATION_ERRORS = ("400", "401", "402", "403", "404", "413", "429", "502", "503", "504")


def _optional(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "required": False, "schema": schema}


CREDITS = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{6}$"}
BILLING_HEADERS = {
    "x-tokendock-cost": _optional("Credits charged (not on streams: see the usage).", CREDITS),
    "x-tokendock-hold": _optional("Streams: credits held until the stream ends.", CREDITS),
    "x-tokendock-credit-remaining": _optional("The balance after this request.", CREDITS),
    **{
        f"x-ratelimit-{kind}-{unit}": _optional(f"The tightest {unit} limit: {kind}.", STRING)
        for kind in ("limit", "remaining", "reset")
        for unit in ("requests", "tokens")
    },
}
RETRY_HEADERS = {
    "retry-after": _optional("Whole seconds to wait.", {"type": "string", "pattern": "^[0-9]+$"}),
    "retry-after-ms": _optional("The exact wait in milliseconds.", STRING),
}


def _generation(summary: str, body: str, ok: str) -> dict[str, Any]:
    content = {**_json(ok), "text/event-stream": {"schema": SSE_EVENT}}
    op = _operation(
        summary,
        _ok(content, "The completion, or its server-sent events when `stream` is true."),
        (*GENERATION_ERRORS, "409"),
        body=body,
        parameters=[IDEMPOTENCY_KEY] if body == "ChatCompletionRequest" else None,
    )
    return _with_billed_headers(op)


def _with_billed_headers(op: dict[str, Any]) -> dict[str, Any]:
    """A billed operation's headers: cost and balance on a 200, Retry-After on a 429 / 503."""
    responses = op["responses"]
    responses["200"]["headers"] = {**HEADERS, **BILLING_HEADERS}
    for code in ("429", "503"):
        responses[code]["headers"] = {**HEADERS, **RETRY_HEADERS}
    return op


def _embeddings() -> dict[str, Any]:
    op = _operation(
        "Embeddings (never streamed)",
        _ok(_json("EmbeddingList"), "One vector per input, in order."),
        (*GENERATION_ERRORS, "409"),
        body="EmbeddingRequest",
        parameters=[IDEMPOTENCY_KEY],
    )
    return _with_billed_headers(op)


def _paths() -> dict[str, Any]:
    model_id = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    }
    return {
        "/v1/chat/completions": {
            "post": _generation("Chat completion", "ChatCompletionRequest", "ChatCompletion")
        },
        "/v1/completions": {
            "post": _generation("Text completion (legacy)", "CompletionRequest", "TextCompletion")
        },
        "/v1/embeddings": {"post": _embeddings()},
        **openapi_messages.paths(HEADERS, BILLING_HEADERS, RETRY_HEADERS),
        "/v1/models": {
            "get": _operation(
                "The models served (no key needed)", _ok(_json("ModelList")), (), security=[]
            )
        },
        "/v1/models/{model_id}": {
            "get": _operation(
                "One model (no key needed)",
                _ok(_json("Model")),
                ("404",),
                parameters=[model_id],
                security=[],
            )
        },
        "/v1/credits": {
            "get": _operation("The account's credit balance", _ok(_json("CreditBalance")), ("401",))
        },
        "/v1/credits/redeem": {
            "post": _operation(
                "Redeem a credit code",
                _ok(_json("Redemption")),
                ("400", "401", "413", "429"),
                body="RedeemRequest",
            )
        },
        "/v1/usage": {
            "get": _operation(
                "The account's latest requests, newest first",
                _ok(_json("UsageList")),
                ("400", "401"),
                parameters=[limit],
            )
        },
        "/health": {"get": _operation("Liveness", _ok(_json("Health")), (), security=[])},
        "/ready": {
            "get": _operation(
                "Readiness (details for the operator only)",
                _ok(_json("Ready")),
                ("503",),
                security=[{}, {"metricsToken": []}],
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (for the operator)",
                _ok({"text/plain": {"schema": {"type": "string"}}}),
                ("401",),
                security=[{}, {"metricsToken": []}],
            )
        },
    }


def _stored_operation(
    summary: str,
    ok: str,
    errors: tuple[str, ...],
    *,
    body: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return _operation(summary, _ok(_json(ok)), errors, body=body, parameters=parameters)


def _with_stored(paths: dict[str, Any]) -> dict[str, Any]:
    """The operations of stored objects — chat completions (web/openapi_stored.py), files and
    uploads (openapi_files.py), batches (openapi_batches.py) — added to `paths`."""
    more = [openapi_stored.paths(_stored_operation), openapi_files.paths(_stored_operation)]
    more.append(openapi_batches.paths(_stored_operation, _anthropic_operation))
    more.append(openapi_conversations.paths(_stored_operation))  # /v1/conversations …
    more.append(openapi_media.paths(_stored_operation))  # pass-through: audio, images …
    for group in more:
        for path, operations in group.items():
            paths.setdefault(path, {}).update(operations)
    return paths


def _anthropic_operation(
    summary: str, ok: str, body: str | None, parameters: list[dict[str, Any]]
) -> dict[str, Any]:
    """An operation of Anthropic's API: errors in Anthropic's envelope."""
    error = {"description": "Anthropic's error envelope.", "headers": HEADERS}
    error["content"] = _json("AnthropicError")
    op: dict[str, Any] = {
        "summary": summary,
        "security": BEARER,
        "parameters": parameters,
        "responses": {"200": _ok(_json(ok)), "default": error},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    return op


def _with_responses(paths: dict[str, Any]) -> dict[str, Any]:
    """The Responses API's operations (web/openapi_responses.py) added to `paths`."""
    create = _generation("Create a response (Responses API)", "ResponseRequest", "Response")
    create["parameters"] = [IDEMPOTENCY_KEY]
    paths.update(openapi_responses.paths(create, _operation, _ok))
    return paths


def _request_schemas() -> dict[str, Schema]:
    models: list[type[BaseModel]] = [
        ChatCompletionRequest,
        CompletionRequest,
        EmbeddingRequest,
        RedeemRequest,
    ]
    schemas = request_schemas(*models)
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        # What SamplingFields' logit_bias validator checks, which pydantic cannot describe.
        bias = schemas[name]["properties"]["logit_bias"]["anyOf"][0]
        bias["propertyNames"] = {"pattern": f"^[0-9]{{1,{MAX_TOKEN_ID_DIGITS}}}$"}
        bias["additionalProperties"] = {"type": "number", "minimum": -100, "maximum": 100}
    schemas.update(openapi_messages.schemas())  # Anthropic's Messages API
    return schemas


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TokenDock",
            "version": __version__,
            "description": "OpenAI-compatible API. Every error is "
            '`{"error": {"message", "type", "param", "code"}}` with an `x-request-id` header.',
        },
        "paths": _with_responses(_with_stored(_paths())),
        "components": {
            "schemas": {
                **_request_schemas(),
                **SCHEMAS,
                **openapi_stored.schemas(),
                **openapi_files.schemas(),
                **openapi_batches.schemas(),
                **openapi_responses.schemas(),
                **openapi_conversations.schemas(),
                **openapi_media.schemas(),
            },
            "headers": {"RequestId": REQUEST_ID},
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "td-… API key"},
                "metricsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TOKENDOCK_METRICS_TOKEN; needed beyond loopback",
                },
            },
        },
    }


def openapi_route() -> Route:
    """The document is built once, when the app is created."""
    body = JSONResponse(document()).body

    async def openapi_json(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return Route("/openapi.json", openapi_json, methods=["GET"])

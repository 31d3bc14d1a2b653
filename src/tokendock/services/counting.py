"""A request's input tokens without generating (POST /v1/messages/count_tokens): not billed;
the caller spends one request of the key's request rate first (Gate.request_only). The
embedded engine counts exactly — the conversation with its tools, as the model reads it
(inference/tools.py `offer`), through the model's chat template and tokenizer; an upstream
model's count is an estimate (4 characters a token, as its bills are estimated when an
upstream reports no usage)."""

from __future__ import annotations

import math

import orjson

from tokendock.errors import InvalidRequest, ModelNotAllowed, ModelNotReady
from tokendock.inference.backend import InferenceRequest
from tokendock.inference.spill import embedded_of
from tokendock.inference.templates import ChatTemplateError
from tokendock.inference.tools import offer
from tokendock.services.pipeline import Backends
from tokendock.storage.accounts import KeyRow

CHARS_PER_TOKEN = 4
TOKENS_PER_TURN = 4  # an estimate of what a chat template adds around each message


async def input_tokens(backends: Backends, key: KeyRow, req: InferenceRequest) -> int:
    backend = backends.backend(req.model)  # 404 for an unknown model
    if key.allowed_models is not None and req.model not in key.allowed_models:
        raise ModelNotAllowed(f"This API key may not use the model '{req.model}'.", param="model")
    if backend.spec.task == "embedding":
        raise InvalidRequest(
            f"The model '{req.model}' is an embedding model.",
            param="model",
            code="model_not_supported",
        )
    backend.bound(req)  # the same 400s as generation (a schema the engine cannot follow …)
    local = embedded_of(backend)
    if local is None:
        return estimate(req)
    if not local.ready:
        raise ModelNotReady(f"The model '{req.model}' is still loading; retry shortly.")
    try:
        return len(await local.engine.tokenize_chat(offer(req.turns, req.tools)))
    except ChatTemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from exc


def estimate(req: InferenceRequest) -> int:
    chars = 0
    for turn in req.turns:
        chars += len(turn.content)
        chars += sum(len(c.name) + len(c.arguments) for c in turn.tool_calls)
    if req.tools is not None and req.tools.active:
        for tool in req.tools.tools:
            chars += len(tool.name) + len(tool.description)
            chars += len(orjson.dumps(tool.parameters)) if tool.parameters is not None else 0
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_TURN * (len(req.turns) + 1)

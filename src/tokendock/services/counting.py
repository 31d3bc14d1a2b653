"""A request's input tokens without generating — the ONE counting use case behind
POST /v1/messages/count_tokens and POST /v1/responses/input_tokens.

Not billed, but limited like any request (Gate.counting): the key's model access first (the
same check as admission: unknown or switched-off model 404, allow-list 403; an embedding model
400), the backend's cheap checks (the same 400s as generation), then one request of RPM, the
worst-case prompt tokens reserved against TPM (settled to the tokens counted) and a concurrency
slot until the count is done — so counting cannot buy the tokenizer's CPU for free.

The embedded engine counts exactly — the conversation with its tools, as the model reads it
(inference/engine/tools.py `offer`), through the model's chat template and tokenizer, off the event
loop when large; an upstream model's count is an estimate (`estimate`: 4 characters a token
plus a few tokens a turn for what a chat template adds).
"""

from __future__ import annotations

import math

import orjson

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest, ModelNotReady
from tokendock.inference.backend import Backend, InferenceRequest
from tokendock.inference.engine.templates import ChatTemplateError
from tokendock.inference.engine.tools import offer
from tokendock.inference.spill import embedded_of
from tokendock.services import bounding
from tokendock.services.gate import Gate
from tokendock.services.pipeline import Backends
from tokendock.storage.accounts import KeyRow

CHARS_PER_TOKEN = 4
TOKENS_PER_TURN = 4  # an estimate of what a chat template adds around each message


class Counter:
    def __init__(self, backends: Backends, gate: Gate):
        self._backends = backends
        self._gate = gate

    def model(self, key: KeyRow, model: str) -> ModelSpec:
        """The model's spec if `key` may count with it (404 / 403 / 400 for an embedding
        model) — checked before anything is read for the count (a stored conversation)."""
        spec = self._gate.access(key, model)
        if spec.task == "embedding":
            raise InvalidRequest(
                f"The model '{model}' is an embedding model: it has no input tokens to count.",
                param="model",
                code="model_not_supported",
            )
        return spec

    async def count(self, key: KeyRow, req: InferenceRequest, request_id: str, param: str) -> int:
        """The input tokens of `req` as its model would read them. `param`: the field a chat
        template's refusal names ("messages", "input")."""
        self.model(key, req.model)
        backend = self._backends.backend(req.model)
        # The same 400s as generation (a schema it cannot follow …); a schema's grammar is
        # made off the event loop, as for generation.
        bound = await bounding.bound(backend, req)
        async with self._gate.counting(key, bound, request_id) as counting:
            counting.counted = await _count(backend, req, param)
        return counting.counted


async def _count(backend: Backend, req: InferenceRequest, param: str) -> int:
    local = embedded_of(backend)
    if local is None:
        return estimate(req)
    if not local.ready:
        raise ModelNotReady(f"The model '{req.model}' is still loading; retry shortly.")
    try:
        return len(await local.engine.tokenize_chat(offer(req.turns, req.tools)))
    except ChatTemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the {param}: {exc}", param=param
        ) from exc


def estimate(req: InferenceRequest) -> int:
    """An upstream model's count: its characters / 4, and a few tokens a turn."""
    chars = 0
    for turn in req.turns:
        chars += len(turn.content)
        chars += sum(len(c.name) + len(c.arguments) for c in turn.tool_calls)
    if req.tools is not None and req.tools.active:
        for tool in req.tools.tools:
            chars += len(tool.name) + len(tool.description)
            chars += len(orjson.dumps(tool.parameters)) if tool.parameters is not None else 0
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_TURN * (len(req.turns) + 1)

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

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest
from tokendock.inference.backend import Backend, InferenceRequest
from tokendock.services import bounding
from tokendock.services.gate import Gate
from tokendock.services.pipeline import Backends
from tokendock.storage.accounts import KeyRow


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
    """The backend's count; a refusal that names the conversation names it as the caller's
    API does (`input` for the Responses API)."""
    try:
        return await backend.count(req)
    except InvalidRequest as exc:
        if exc.param == "messages" and param != "messages":
            exc.param = param
            exc.message = exc.message.replace("the messages", f"the {param}")
            exc.args = (exc.message,)
        raise

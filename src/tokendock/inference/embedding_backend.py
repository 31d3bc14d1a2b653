"""Embedding models as `Backend`s (inference/backend.py): on llama.cpp (inference/embedder.py)
or on upstream deployments (their /embeddings, through the router).

Requests are kind "embed": `prompts` are the inputs (texts or token ids), `dimensions` what the
client asked. Events: one `Embedding(index, vector)` per input, in order. The tally bills the
inputs' tokens (prompt tokens; never completion tokens).

- `bound`: cheap — a token-id input past the model's vocabulary or longer than it takes is a 400
  naming `input`; `dimensions` on a model not trained Matryoshka-style is a 400; the worst case
  is each input's bytes (+ [CLS]/[SEP]), capped at the tokens one input may have.
- `begin`: tokenize (exact counts); an input over the model's tokens is a 400 naming `input`
  (OpenAI refuses, it does not truncate).
- Upstream: the client's JSON goes to the deployment's /embeddings as sent (the router sets the
  deployment's model name); the reply's vectors (floats or base64) become events, and its usage
  the tally (without one: 4 characters a token, marked estimated).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import math
from collections.abc import AsyncIterator, Sequence

import numpy as np

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest, UpstreamError
from tokendock.inference import upstream_reply as reply
from tokendock.inference.backend import JSON, Bound, Embedding, InferenceRequest, Tally
from tokendock.inference.base import Meter
from tokendock.inference.embedder import LlamaEmbedder, Vectors, truncate
from tokendock.inference.router import Router
from tokendock.inference.upstream import Answer, ClientFault

log = logging.getLogger(__name__)

STOP_SECONDS = 30  # the engine stops after the batch under way; this is a backstop
CHARS_PER_TOKEN = 4  # estimates only, when an upstream reports no usage
SPECIAL_TOKENS = 2  # [CLS] and [SEP] around each text


class EmbeddingBackend:
    def __init__(self, embedder: LlamaEmbedder, spec: ModelSpec):
        self.embedder = embedder
        self.spec = spec

    @property
    def ready(self) -> bool:
        return self.embedder.ready

    async def open(self) -> None:
        await self.embedder.start()

    async def close(self) -> None:
        await self.embedder.close()

    def bound(self, req: InferenceRequest) -> Bound:
        limit = self.embedder.max_input_tokens
        vocab = self.embedder.vocab_size
        for i, given in enumerate(req.prompts):
            if isinstance(given, str):
                continue
            if len(given) > limit:
                raise too_long(i, len(given), limit)
            if vocab:  # known once loaded (begin() says "not ready" before that)
                _check_ids(given, vocab)
        if req.dimensions is not None:
            check_dimensions(self.spec, req.dimensions, self.embedder.dimensions)
        return Bound(sum(min(b, limit) for b in req.prompt_bytes), 0)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> EmbeddingRun:
        return EmbeddingRun(self.embedder, req, owner, request_id)


class EmbeddingRun:
    def __init__(self, embedder: LlamaEmbedder, req: InferenceRequest, owner: str, rid: str):
        self._embedder = embedder
        self._req = req
        self._owner = owner
        self._request_id = rid
        self._inputs: list[Sequence[int]] = []
        self._meter = Meter()
        self._submitted = False

    @property
    def prompt_tokens(self) -> int:
        return sum(len(tokens) for tokens in self._inputs)

    async def begin(self) -> None:
        prompts = self._req.prompts
        texts = [p for p in prompts if isinstance(p, str)]
        tokenized = iter(await self._embedder.tokenize(texts) if texts else [])
        inputs: list[Sequence[int]] = [
            next(tokenized) if isinstance(p, str) else p for p in prompts
        ]
        limit = self._embedder.max_input_tokens
        for i, tokens in enumerate(inputs):
            if len(tokens) > limit:
                raise too_long(i, len(tokens), limit)
        self._inputs = inputs

    async def events(self) -> AsyncIterator[Embedding]:
        self._submitted = True
        vectors: Vectors = await self._embedder.embed(self._inputs, self._owner, self._meter)
        dimensions = self._req.dimensions
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = truncate(vectors, dimensions)
        for index, vector in enumerate(vectors):
            yield Embedding(index, vector)

    def abandon(self) -> None:
        if not self._submitted:
            self._meter.done.set()  # never reached the engine: nothing to wait for

    async def tally(self) -> Tally:
        if not self._submitted:
            self._meter.done.set()
        try:
            await asyncio.wait_for(self._meter.done.wait(), STOP_SECONDS)
        except TimeoutError:
            log.error("embedder did not finish request %s in time", self._request_id)
        started = self._meter.started
        return Tally(prompt_tokens=self.prompt_tokens if started else 0, started=started)


class UpstreamEmbeddingBackend:
    def __init__(self, router: Router, spec: ModelSpec):
        self.router = router
        self.spec = spec

    @property
    def ready(self) -> bool:
        return True  # an upstream's health is not this process's readiness (see registry)

    async def open(self) -> None:
        """The shared pool (inference/pool.py) opens the connections and probes."""

    async def close(self) -> None:
        """The shared pool closes them."""

    def bound(self, req: InferenceRequest) -> Bound:
        req.payload.json()  # strict JSON, before admission (a 400 now, never a failure later)
        window = self.spec.context_length
        return Bound(sum(min(b, window) for b in req.prompt_bytes), 0)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> UpstreamEmbeddingRun:
        return UpstreamEmbeddingRun(self.router, req, request_id)


class UpstreamEmbeddingRun:
    def __init__(self, router: Router, req: InferenceRequest, request_id: str):
        self._router = router
        self._req = req
        self._request_id = request_id
        self._answer: Answer | None = None
        self._usage: JSON | None = None
        self._produced = False
        self._finished = False

    @property
    def prompt_tokens(self) -> int:
        return reply.count(self._usage.get("prompt_tokens")) if self._usage else 0

    async def begin(self) -> None:
        try:
            self._answer = await self._router.open(
                "/embeddings", self._req.payload.json(), stream=False, request_id=self._request_id
            )
        except asyncio.CancelledError:
            self._produced = True  # an upstream may have worked on it: billed (estimated)
            raise
        except ClientFault as fault:
            raise client_error(fault) from None
        self._produced = True

    async def events(self) -> AsyncIterator[Embedding]:
        answer = self._answer
        assert answer is not None and answer.body is not None, "begin() first"
        self._finish()
        body = answer.body
        usage = body.get("usage")
        self._usage = usage if isinstance(usage, dict) else None
        for event in upstream_vectors(body, len(self._req.prompts)):
            yield event

    def abandon(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self._answer is not None and not self._finished:
            self._finished = True
            self._router.finish(self._answer)

    async def tally(self) -> Tally:
        self._finish()
        if self._usage is not None:
            prompt, estimated = self.prompt_tokens, False
        elif self._produced:
            chars = sum(len(p) if isinstance(p, str) else 0 for p in self._req.prompts)
            ids = sum(0 if isinstance(p, str) else len(p) for p in self._req.prompts)
            prompt, estimated = ids + math.ceil(chars / CHARS_PER_TOKEN), True
        else:
            prompt, estimated = 0, False
        answer = self._answer
        return Tally(
            prompt_tokens=prompt,
            started=self._produced,
            estimated=estimated,
            deployment=answer.deployment.name if answer is not None else None,
        )


def upstream_vectors(body: JSON, expected: int) -> list[Embedding]:
    """The vectors of an upstream's embeddings reply, by index; a malformed reply is a 502."""
    data = body.get("data")
    if not isinstance(data, list) or len(data) != expected:
        raise UpstreamError("The upstream server sent a malformed embeddings reply.")
    events: list[Embedding] = []
    for position, item in enumerate(data):
        value = item.get("embedding") if isinstance(item, dict) else None
        index = item.get("index", position) if isinstance(item, dict) else position
        try:
            if isinstance(value, str):
                vector = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4")
            elif isinstance(value, list):
                vector = np.asarray(value, dtype=np.float32)
            else:
                raise ValueError("no vector")
        except (ValueError, TypeError, binascii.Error):
            raise UpstreamError("The upstream server sent a malformed embedding.") from None
        events.append(Embedding(index if isinstance(index, int) else position, vector))
    events.sort(key=lambda event: event.index)
    return events


def check_dimensions(spec: ModelSpec, dimensions: int, native: int) -> None:
    """`dimensions`: any size up to the model's for a Matryoshka model; else only its own."""
    if native and dimensions > native:
        raise InvalidRequest(
            f"Invalid 'dimensions': {dimensions}; the model '{spec.id}' makes vectors of "
            f"{native} dimensions.",
            param="dimensions",
        )
    if not spec.matryoshka and dimensions != native:
        raise InvalidRequest(
            f"The model '{spec.id}' does not support 'dimensions' (it is not trained to be "
            "shortened); leave it out.",
            param="dimensions",
        )


def too_long(index: int, tokens: int, limit: int) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid 'input': input {index} has {tokens} tokens; this model takes at most {limit} "
        "tokens per input. Shorten or split it.",
        param="input",
        code="context_length_exceeded",
    )


def _check_ids(tokens: Sequence[int], vocab: int) -> None:
    for token in tokens:
        if token >= vocab:
            raise InvalidRequest(
                f"Invalid 'input': token id {token} is outside the model's vocabulary "
                f"(0..{vocab - 1}).",
                param="input",
            )


def client_error(fault: ClientFault) -> InvalidRequest:
    message = str(fault.error.get("message") or "The upstream server refused the request.")
    param, code = fault.error.get("param"), fault.error.get("code")
    return InvalidRequest(
        message,
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )

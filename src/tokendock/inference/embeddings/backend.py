"""Embedding models on llama.cpp as `Backend`s (inference/backend.py), through the embedder
(inference/embeddings/embedder.py); upstream deployments' embeddings are
inference/upstream/embeddings.py.

Requests are kind "embed": `prompts` are the inputs (texts or token ids), `dimensions` what the
client asked. Events: one `Embedding(index, vector)` per input, in order. The tally bills the
inputs' tokens (prompt tokens; never completion tokens).

- `bound`: cheap — a token-id input past the model's vocabulary or longer than it takes is a 400
  naming `input`; `dimensions` on a model not trained Matryoshka-style is a 400; the worst case
  is each input's bytes (+ [CLS]/[SEP]), capped at the tokens one input may have.
- `begin`: tokenize (exact counts); an input over the model's tokens is a 400 naming `input`
  (OpenAI refuses, it does not truncate).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest
from tokendock.inference.backend import Bound, Embedding, InferenceRequest, Tally
from tokendock.inference.budget import not_counted
from tokendock.inference.embeddings.embedder import LlamaEmbedder, Vectors, truncate
from tokendock.inference.vocabulary import Meter

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

    async def count(self, req: InferenceRequest) -> int:
        raise not_counted(self.spec)

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
        vectors: Vectors = await self._embedder.embed(
            self._inputs, self._owner, self._meter, background=self._req.background
        )
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

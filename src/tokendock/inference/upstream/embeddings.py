"""Embedding models on upstream deployments as `Backend`s: the client's JSON goes to the
deployment's /embeddings as sent (the router sets the deployment's model name); the reply's
vectors (floats or base64) become events, and its usage the tally (without one: 4 characters a
token, marked estimated). Events: one `Embedding(index, vector)` per input, in order."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator

import numpy as np

from tokendock.errors import UpstreamError
from tokendock.inference.backend import JSON, Bound, Embedding, InferenceRequest, Tally
from tokendock.inference.budget import not_counted
from tokendock.inference.upstream import reply
from tokendock.inference.upstream.backend import Deployed, client_error, estimate_prompt
from tokendock.inference.upstream.client import Answer, ClientFault
from tokendock.inference.upstream.router import Router


class UpstreamEmbeddingBackend(Deployed):
    async def count(self, req: InferenceRequest) -> int:
        raise not_counted(self.spec)

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
                "/embeddings",
                self._req.payload.json(),
                stream=False,
                request_id=self._request_id,
                background=self._req.background,
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
            prompt, estimated = estimate_prompt(self._req), True
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

"""Pass-through models on upstream deployments (audio, images, moderation, rerank) as a `Backend`.

The request is an `Opaque` body (inference/backend.py) of the model's catalog task; the answer
is the upstream's bytes, relayed as they arrive (`Chunk` events, the first with the answer's
content type). Billing is by the model's price unit (catalog `price.unit`):

    unit        bound (what the hold covers)               settled from
    token       the body's bytes (+ the output cap)        the upstream's usage; else estimated
    second      `max_audio_seconds`                        its usage / `duration`; else the
                                                           file's header (estimated)
    character   the characters of `input` (exact)          the same count
    image       `n` (≤ `max_images`)                       entries in its `data`; else `n`
    request     1                                          1

A model sold by another unit than tokens reserves nothing against tokens-per-minute (`Bound.
rate_tokens`), and its quantity is billed as prompt "tokens" at the per-unit price
(services/models.py) with `Tally.unit` saying what they are.

Retries (router.py `send`): a body held in memory or spooled (`Opaque.replayable`) is retried
on another deployment like chat; a live body only while none of it went out — after that a
failure is a 502. A failure of the client's own body (it left mid-upload, it was too large)
ends the request with that error and blames no deployment. Nothing is billed unless the whole
body reached an upstream that answered, or the upstream had it whole when the client left.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import aiohttp

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest, UpstreamError
from tokendock.inference.backend import Bound, Chunk, InferenceRequest, Opaque, Output, Tally
from tokendock.inference.budget import not_counted
from tokendock.inference.upstream.backend import CHARS_PER_TOKEN, Deployed, client_error
from tokendock.inference.upstream.client import Answer, ClientFault
from tokendock.inference.upstream.measure import Reading, audio_seconds
from tokendock.inference.upstream.router import Router

READ = 64 * 1024  # bytes of the answer read at a time
TEXT_FIELDS = ("input", "prompt", "query", "documents", "text_1", "text_2", "text")
PARSE_OFF_LOOP = 1024 * 1024  # a kept JSON answer larger than this is parsed in a thread


class PassThroughBackend(Deployed):
    async def count(self, req: InferenceRequest) -> int:
        raise not_counted(self.spec)

    def bound(self, req: InferenceRequest) -> Bound:
        opaque = _opaque(req)
        spec = self.spec
        unit = _unit(spec)
        if spec.task == "speech":
            text = opaque.fields.get("input")
            if not isinstance(text, str) or not text:
                raise InvalidRequest("'input' must be the text to speak.", param="input")
            if len(text) > spec.max_characters:
                raise InvalidRequest(
                    f"'input' is {len(text)} characters; the model '{spec.id}' takes at most "
                    f"{spec.max_characters}.",
                    param="input",
                    code="string_above_max_length",
                )
        images = _images(spec, opaque) if spec.task == "image" else 1
        if unit == "second":
            return Bound(spec.max_audio_seconds, 0, rate_tokens=0)
        if unit == "character":
            return Bound(characters(opaque.fields), 0, rate_tokens=0)
        if unit == "image":
            return Bound(images, 0, rate_tokens=0)
        if unit == "request":
            return Bound(1, 0, rate_tokens=0)
        generates = spec.task in ("transcription", "speech", "image")
        return Bound(_prompt_tokens(spec, req), spec.output_cap * images if generates else 0)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> PassThroughRun:
        return PassThroughRun(self, req, request_id, bound or self.bound(req))


class Sending:
    """One request's body on its way upstream: counts what went out and keeps the client
    body's own failure (it left, it was too large) so it ends the request, not a retry."""

    def __init__(self, opaque: Opaque):
        self._opaque = opaque
        self.sent = 0
        self.done = False
        self.failure: BaseException | None = None

    def body(self, model: str) -> AsyncIterable[bytes]:
        return self._stream(model)

    async def _stream(self, model: str) -> AsyncIterator[bytes]:
        self.done = False
        try:
            async for piece in self._opaque.body(model):
                self.sent += len(piece)
                yield piece
        except Exception as exc:
            self.failure = exc
            raise
        self.done = True

    def retry(self) -> bool:
        if self.failure is not None:
            raise self.failure
        return self._opaque.replayable or self.sent == 0


class PassThroughRun:
    def __init__(
        self, backend: PassThroughBackend, req: InferenceRequest, request_id: str, bound: Bound
    ):
        self._router: Router = backend.router
        self._spec = backend.spec
        self._req = req
        self._opaque = _opaque(req)
        self._request_id = request_id
        self._bound = bound
        self._sending = Sending(self._opaque)
        self._answer: Answer | None = None
        self._reading: Reading | None = None
        self._relayed = False
        self._produced = False
        self._first: float | None = None

    @property
    def prompt_tokens(self) -> int:
        return 0

    async def begin(self) -> None:
        try:
            self._answer = await self._router.send(
                self._opaque.path,
                self._sending.body,
                self._opaque.content_type,
                request_id=self._request_id,
                retry=self._sending.retry,
                background=self._req.background,
            )
        except ClientFault as fault:
            raise client_error(fault) from None
        except asyncio.CancelledError:
            # The client left while an upstream worked on its whole body: billed (estimated).
            self._produced = self._sending.done and self._sending.failure is None
            raise
        except BaseException:
            if self._sending.failure is not None:
                raise self._sending.failure from None
            raise
        self._produced = True

    async def events(self) -> AsyncIterator[Output]:
        answer = self._answer
        assert answer is not None and answer.response is not None, "begin() first"
        self._relayed = True
        response = answer.response
        content_type = response.headers.get("content-type", "application/octet-stream")
        reading = self._reading = Reading(content_type)
        ok = False
        try:
            first = True
            async for piece in response.content.iter_chunked(READ):
                reading.take(piece)
                if first:
                    self._first = time.monotonic()
                yield Chunk(piece, content_type if first else None)
                first = False
            if first:
                yield Chunk(b"", content_type)
            ok = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(
                f"The upstream server failed while sending its answer ({type(exc).__name__})."
            ) from None
        finally:
            answer.close(reuse=ok)
            self._router.finish(answer)
        if reading.kept > PARSE_OFF_LOOP:
            await asyncio.to_thread(reading.finish)
        else:
            reading.finish()

    def abandon(self) -> None:
        answer = self._answer
        if answer is None or self._relayed:
            return
        self._relayed = True
        answer.close(reuse=False)
        self._router.finish(answer)

    async def tally(self) -> Tally:
        answer = self._answer
        deployment = answer.deployment.name if answer is not None else None
        if not self._produced:
            return Tally(deployment=deployment)
        unit = _unit(self._spec)
        reading = self._reading or Reading(None)
        prompt, completion, estimated = self._quantity(unit, reading)
        return Tally(
            prompt_tokens=prompt,
            completion_tokens=completion,
            started=True,
            estimated=estimated,
            finish="stop",
            deployment=deployment,
            first_token=self._first,
            unit=None if unit == "token" else unit,
        )

    def _quantity(self, unit: str, reading: Reading) -> tuple[int, int, bool]:
        """(quantity or input tokens, output tokens, estimated)."""
        bound = self._bound
        if unit == "second":
            seconds = reading.seconds()
            if seconds is not None:
                return seconds, 0, False
            seen = self._opaque.file
            estimate = audio_seconds(bytes(seen.head), seen.size) if seen.size else None
            return min(estimate or bound.prompt_tokens, bound.prompt_tokens), 0, True
        if unit == "image":
            if reading.entries is not None:
                return reading.entries, 0, False
            return bound.prompt_tokens, 0, True
        if unit in ("character", "request"):
            return bound.prompt_tokens, 0, False
        tokens = reading.tokens()
        if tokens is not None:
            return tokens[0], tokens[1], False
        body = self._req.payload.raw
        estimate = math.ceil(len(body) / CHARS_PER_TOKEN) if body != b"{}" else bound.prompt_tokens
        return estimate, 0, True


def _opaque(req: InferenceRequest) -> Opaque:
    if req.opaque is None:
        raise InvalidRequest(f"The model '{req.model}' serves its own routes only.", param="model")
    return req.opaque


def _unit(spec: ModelSpec) -> str:
    return "token" if spec.price is None else spec.price.unit


def _images(spec: ModelSpec, opaque: Opaque) -> int:
    given: Any = opaque.fields.get("n", 1)
    try:
        n = int(given) if given is not None and not isinstance(given, bool | float) else 0
    except (TypeError, ValueError):
        n = 0
    if not 1 <= n <= spec.max_images:
        raise InvalidRequest(
            f"'n' must be a whole number from 1 to {spec.max_images} for the model '{spec.id}'.",
            param="n",
        )
    return n


def characters(fields: Any) -> int:
    """The characters of the text a request sends (its `input`, `prompt`, `query` …)."""
    if isinstance(fields, str):
        return len(fields)
    if isinstance(fields, list):
        return sum(characters(item) for item in fields)
    if isinstance(fields, dict):
        return sum(characters(fields[k]) for k in TEXT_FIELDS if k in fields)
    return 0


def _prompt_tokens(spec: ModelSpec, req: InferenceRequest) -> int:
    """The prompt tokens a request of a model sold by the token is held for: an upload's (its
    tokens are not its bytes) or a form's, the context window; a JSON body's, its bytes within
    the window — a rerank's without it (every document is read with the query)."""
    if spec.task in ("transcription", "image") or req.payload.raw == b"{}":
        return spec.context_length
    tokens = _body_tokens(req)
    return tokens if spec.task == "rerank" else min(tokens, spec.context_length)


def _body_tokens(req: InferenceRequest) -> int:
    """A JSON body's tokens at most: a token is at least one byte, and each listed item gets
    a template's few tokens around it."""
    payload = req.opaque.fields if req.opaque is not None else {}
    items = max(
        (len(v) for v in payload.values() if isinstance(v, list)),
        default=1,
    )
    return len(req.payload.raw) + 16 * items

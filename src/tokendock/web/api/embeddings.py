"""POST /v1/embeddings: the wire adapter — JSON body → an `InferenceRequest` of kind "embed",
the vectors → OpenAI's list body. Admission, billing, idempotency and the response headers are
the pipeline's and web/api/respond.py's, as for every endpoint. Never streamed."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.inference.backend import Event, InferenceRequest, Passthrough
from tokendock.protocol.embeddings import EmbeddingRequest, embedding_body
from tokendock.services.answer import Answer
from tokendock.web.api.respond import Stamp, serve
from tokendock.web.deps import current_key, parse_body, services_of


def inference_request(req: EmbeddingRequest, body: bytes) -> InferenceRequest:
    return InferenceRequest(
        kind="embed",
        model=req.model,
        prompts=tuple(p if isinstance(p, str) else tuple(p) for p in req.inputs()),
        prompt_bytes=tuple(req.input_bounds()),
        dimensions=req.dimensions,
        user=req.user,
        payload=Passthrough(body),
        endpoint="embeddings",
    )


class EmbeddingWire:
    """The list body; `encoding` is the request's encoding_format ("float" or "base64")."""

    prefix = "emb"
    chunk_object = "list"

    def __init__(self, encoding: str):
        self.encoding = encoding

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return None

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        raise AssertionError("embeddings are never streamed")

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        vectors = [e.vector for e in sorted(answer.embeddings, key=lambda e: e.index)]
        return embedding_body(stamp.model, vectors, usage["prompt_tokens"], self.encoding)


async def embeddings(request: Request) -> Response:
    deps = services_of(request)
    key = await current_key(request)
    req = await parse_body(request, EmbeddingRequest)
    req.check()
    wire = EmbeddingWire(req.encoding_format or "float")
    return await serve(request, deps, key, inference_request(req, await request.body()), wire)


routes = [Route("/v1/embeddings", embeddings, methods=["POST"])]

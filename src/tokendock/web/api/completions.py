"""POST /v1/completions (legacy text completion): the wire adapter — JSON body →
`InferenceRequest`, events → text_completion bodies. The rest is web/api/respond.py's."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tokendock.inference.backend import Delta, Event, Features, InferenceRequest, Passthrough
from tokendock.protocol.completions import CompletionRequest, text_chunk_body
from tokendock.services.pipeline import Answer
from tokendock.web.api.respond import Stamp, serve
from tokendock.web.deps import current_key, parse_body, services_of


async def completions(request: Request) -> Response:
    # A plain Starlette route: the hot path skips FastAPI's dependency solving.
    deps = services_of(request)
    key = await current_key(request)
    req = await parse_body(request, CompletionRequest)
    req.check()
    body = await request.body()
    return await serve(request, deps, key, inference_request(req, body), TEXT)


def inference_request(req: CompletionRequest, body: bytes) -> InferenceRequest:
    prompts = req.prompts()
    return InferenceRequest(
        kind="text",
        model=req.model,
        prompts=tuple(p if isinstance(p, str) else tuple(p) for p in prompts),
        prompt_bytes=tuple(req.prompt_bounds()),
        n=req.n or 1,
        max_tokens=req.max_tokens,
        stop=req.stop_list(),
        temperature=req.temperature,
        top_p=req.top_p,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        seed=req.seed,
        logit_bias=req.logit_bias_ids(),
        echo=req.echo,
        user=req.user,
        stream=bool(req.stream),
        include_usage=req.include_usage(),
        features=Features(
            logprobs=req.logprobs is not None,
            top_logprobs=req.logprobs,
            suffix=bool(req.suffix),
            best_of=None if req.best_of in (None, req.n or 1) else req.best_of,
        ),
        payload=Passthrough(body),
    )


class TextWire:
    prefix = "cmpl"
    chunk_object = "text_completion"

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return None  # text completion streams have no opening chunk

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        if isinstance(event, Delta):
            body = _chunk(stamp, event.index, event.text, None, with_usage)
            if event.logprobs is not None:
                body["choices"][0]["logprobs"] = event.logprobs
            return body
        return _chunk(stamp, event.index, "", event.reason, with_usage)

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": stamp.id,
            "object": "text_completion",
            "created": stamp.created,
            "model": stamp.model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": i,
                    "text": c.text,
                    "logprobs": c.logprobs,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(answer.choices)
            ],
            "usage": usage,
        }


def _chunk(
    stamp: Stamp, index: int, text: str, finish: str | None, with_usage: bool
) -> dict[str, Any]:
    return text_chunk_body(
        request_id=stamp.id,
        created=stamp.created,
        model=stamp.model,
        index=index,
        text=text,
        finish_reason=finish,
        with_usage_field=with_usage,
    )


TEXT = TextWire()
routes = [Route("/v1/completions", completions, methods=["POST"])]

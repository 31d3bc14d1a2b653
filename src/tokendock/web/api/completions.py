"""POST /v1/completions (legacy text completion): the wire adapter — JSON body →
`InferenceRequest`, events → text_completion bodies. The rest is web/api/respond.py's."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from tokendock.inference.backend import Delta, Event, Features, InferenceRequest, Passthrough
from tokendock.protocol.common import NO_USAGE, response_body
from tokendock.protocol.completions import CompletionRequest, text_choice
from tokendock.services.answer import Answer
from tokendock.web.api.respond import Stamp, endpoint, sampled, stamped


def inference_request(req: CompletionRequest, body: bytes) -> InferenceRequest:
    n = req.n or 1
    return InferenceRequest(
        kind="text",
        prompts=tuple(p if isinstance(p, str) else tuple(p) for p in req.prompts()),
        prompt_bytes=tuple(req.prompt_bounds()),
        max_tokens=req.max_tokens,
        echo=req.echo,
        features=Features(
            logprobs=req.logprobs is not None,
            top_logprobs=req.logprobs,
            suffix=bool(req.suffix),
            best_of=None if req.best_of in (None, n) else req.best_of,
        ),
        payload=Passthrough(body),
        endpoint="completions",
        **sampled(req),
    )


class TextWire:
    prefix = "cmpl"
    chunk_object = "text_completion"

    def opening(self, stamp: Stamp, index: int, with_usage: bool) -> dict[str, Any] | None:
        return None  # text completion streams have no opening chunk

    def chunk(self, stamp: Stamp, event: Event, with_usage: bool) -> dict[str, Any]:
        if isinstance(event, Delta):
            choice = text_choice(event.index, event.text, None, event.logprobs)
        else:
            choice = text_choice(event.index, "", event.reason)
        usage: Any = None if with_usage else NO_USAGE
        return response_body(self.chunk_object, **stamped(stamp), choices=[choice], usage=usage)

    def body(self, stamp: Stamp, answer: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        choices = [
            text_choice(i, c.text, c.finish_reason, c.logprobs)
            for i, c in enumerate(answer.choices)
        ]
        return response_body("text_completion", **stamped(stamp), choices=choices, usage=usage)


completions = endpoint(CompletionRequest, inference_request, TextWire())
routes = [Route("/v1/completions", completions, methods=["POST"])]

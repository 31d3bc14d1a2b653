"""Batch lines through the same front doors as the routes (services/batch_lines.py): each
endpoint's schema and parse function build the line's `InferenceRequest`, and its wire renders
the body the route would have answered. A line the route would refuse raises the route's 400
(naming the field): the line's result is that error. `stream` (and `background`) have no
meaning in a batch: a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from tokendock.errors import InvalidRequest
from tokendock.inference.backend import InferenceRequest, Tally
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.protocol.common import usage_dict
from tokendock.protocol.completions import CompletionRequest
from tokendock.protocol.embeddings import EmbeddingRequest
from tokendock.protocol.messages import MessagesRequest
from tokendock.services.answer import Answer
from tokendock.services.batch_lines import Adapters, LineWork
from tokendock.services.pipeline import Call
from tokendock.web.api import chat, completions, embeddings, messages
from tokendock.web.api.respond import Stamp, Wire
from tokendock.web.deps import parse_bytes


class AnswerWork:
    """A line whose answer is assembled from its events and rendered by the route's wire."""

    def __init__(self, request: InferenceRequest, wire: Wire):
        self.request = request
        self._wire = wire
        self._answer = Answer()

    async def read(self, call: Call) -> None:
        async for event in call.events():
            self._answer.take(event)

    def render(self, tally: Tally | None) -> dict[str, Any]:
        usage = (
            usage_dict(0, 0)
            if tally is None
            else usage_dict(tally.prompt_tokens, tally.completion_tokens, tally.cached_tokens)
        )
        stamp = Stamp.new(self._wire.prefix, self.request.model)
        return self._wire.body(stamp, self._answer, usage)


def _no_stream(stream: bool | None) -> None:
    if stream:
        raise InvalidRequest("stream is not supported in a batch request.", param="stream")


async def _chat(account_id: int, body: bytes) -> LineWork:
    req = parse_bytes(body, ChatCompletionRequest)
    req.check()
    _no_stream(req.stream)
    return AnswerWork(chat.inference_request(req, body), chat.ChatWire())


async def _completions(account_id: int, body: bytes) -> LineWork:
    req = parse_bytes(body, CompletionRequest)
    req.check()
    _no_stream(req.stream)
    return AnswerWork(completions.inference_request(req, body), completions.TextWire())


async def _embeddings(account_id: int, body: bytes) -> LineWork:
    req = parse_bytes(body, EmbeddingRequest)
    req.check()
    wire = embeddings.EmbeddingWire(req.encoding_format or "float")
    return AnswerWork(embeddings.inference_request(req, body), wire)


async def _messages(account_id: int, body: bytes) -> LineWork:
    req = parse_bytes(body, MessagesRequest)
    req.check()
    _no_stream(req.stream)
    return AnswerWork(messages.inference_request(req), messages.WIRE)


ADAPTERS: Adapters = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completions,
    "/v1/embeddings": _embeddings,
    "/v1/messages": _messages,
}

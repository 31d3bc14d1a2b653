"""Batch lines through the same front doors as the routes (services/batch_lines.py): each
endpoint's schema and parse function build the line's `InferenceRequest`, and its wire renders
the body the route would have answered. A line the route would refuse raises the route's 400
(naming the field): the line's result is that error. `stream` (and `background`) have no
meaning in a batch: a 400 naming the field.
"""

from __future__ import annotations

import time
from typing import Any

from tokendock.errors import InvalidRequest
from tokendock.inference.backend import Delta, Finish, InferenceRequest, Tally
from tokendock.inference.registry import ModelRegistry
from tokendock.protocol.chat import ChatCompletionRequest
from tokendock.protocol.common import usage_dict
from tokendock.protocol.completions import CompletionRequest
from tokendock.protocol.embeddings import EmbeddingRequest
from tokendock.protocol.messages import MessagesRequest
from tokendock.protocol.response_shapes import (
    OutputBuilder,
    ResponseRecord,
    new_id,
    response_object,
    response_usage,
)
from tokendock.protocol.responses import ResponseRequest, input_items
from tokendock.services.answer import Answer
from tokendock.services.batch_lines import Adapters, LineWork
from tokendock.services.pipeline import Call
from tokendock.services.responses import INCOMPLETE, Responses
from tokendock.web.api import chat, completions, embeddings, messages, responses_request
from tokendock.web.api.respond import Stamp, Wire
from tokendock.web.api.responses import echoed
from tokendock.web.api.responses_request import truncated
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


class ResponseWork:
    """A Responses API line: its output items built from the events as the route builds them;
    the response object rendered (not stored: a batch line's response is its output line)."""

    def __init__(self, request: InferenceRequest, rec: ResponseRecord):
        self.request = request
        self._rec = rec
        self._builder = OutputBuilder()
        self._reason = "stop"

    async def read(self, call: Call) -> None:
        async for event in call.events():
            if isinstance(event, Delta):
                self._builder.text(event.text)
                for piece in event.tool_calls or ():
                    self._builder.call(piece)
            elif isinstance(event, Finish):
                self._reason = event.reason

    def render(self, tally: Tally | None) -> dict[str, Any]:
        incomplete = INCOMPLETE.get(self._reason)
        builder, rec = self._builder, self._rec
        builder.finish(incomplete is None)
        rec.status = "incomplete" if incomplete else "completed"
        rec.output, rec.incomplete_reason = builder.items, incomplete
        if tally is not None:
            rec.usage = response_usage(
                tally.prompt_tokens, tally.completion_tokens, tally.cached_tokens
            )
        return response_object(rec)


def adapters(responses: Responses, models: ModelRegistry) -> Adapters:
    """Every endpoint a batch line may name; Responses lines read the account's stored
    responses (`previous_response_id`) through `responses`."""

    async def _responses(account_id: int, body: bytes) -> LineWork:
        req = parse_bytes(body, ResponseRequest)
        req.check()
        _no_stream(req.stream)
        if req.background:
            raise InvalidRequest(
                "background is not supported in a batch request.", param="background"
            )
        if req.conversation is not None:  # a line's output is its result line, not a turn
            raise InvalidRequest(
                "conversation is not supported in a batch request.", param="conversation"
            )
        req.store = False  # a batch line's response is its output line: not stored
        context = await responses.context(account_id, req.previous_response_id)
        items = truncated(req, [*context, *input_items(req.input)], models.spec(req.model))
        rec = ResponseRecord(
            id=new_id("resp"),
            account_id=account_id,
            model=req.model,
            created_at=int(time.time()),
            background=False,
            previous_response_id=req.previous_response_id,
            request=echoed(req),
            input_items=[],
            context=[],
            metadata=req.metadata,
        )
        return ResponseWork(responses_request.inference_request(req, items, stream=False), rec)

    return {
        "/v1/chat/completions": _chat,
        "/v1/completions": _completions,
        "/v1/embeddings": _embeddings,
        "/v1/responses": _responses,
        "/v1/messages": _messages,
    }

"""Upstream deployments (inference/upstream/router.py) as a `Backend` (inference/backend.py).

- `bound`: the model's output caps, and the prompt bounded before anything is sent — by the
  whole body's bytes for a conversation (tools and schemas count as prompt upstream), per
  prompt for text; each ≤ the context window. Everything else is the upstream's to refuse.
- `begin`: the client's own JSON (the request's `payload`) goes upstream with TokenDock's
  defaults (the model's output cap; usage always asked on streams); the router retries on
  another deployment until one commits, before the first byte reaches the client (a batch line,
  `InferenceRequest.background`, waits for one of a deployment's batch seats: router.py).
- `events`: the upstream's chunks (or whole answer) as typed events. The tally is the
  upstream's own usage (an explicit zero is a zero; its `prompt_tokens_details.cached_tokens`
  are the prompt tokens its prefix cache served, billed at the cached price); without one — a
  stream cut by the client or the upstream — what was seen is estimated (a streamed piece is a
  token; text at 4 characters a token) and marked so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator

import orjson

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest, RequestTooLarge, TokenDockError, UpstreamError
from tokendock.inference.backend import (
    JSON,
    Bound,
    Delta,
    Event,
    Finish,
    InferenceRequest,
    Tally,
)
from tokendock.inference.budget import check_request_cap, per_choice
from tokendock.inference.upstream import reply
from tokendock.inference.upstream.client import Answer, ClientFault, UpstreamFailure
from tokendock.inference.upstream.reply import Seen
from tokendock.inference.upstream.router import Router

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4  # for estimates only, when an upstream reports no usage
TOKENS_PER_TURN = 4  # an estimate of what a chat template adds around each message


class Deployed:
    """What every backend on upstream deployments shares: its router and spec; the shared pool
    (inference/upstream/pool.py) opens and closes the connections and runs the probes."""

    def __init__(self, router: Router, spec: ModelSpec):
        self.router = router
        self.spec = spec

    @property
    def ready(self) -> bool:
        return True  # an upstream's health is not this process's readiness (see registry)

    async def open(self) -> None:
        """The shared pool (inference/upstream/pool.py) opens the connections and probes."""

    async def close(self) -> None:
        """The shared pool closes them."""


class UpstreamBackend(Deployed):
    async def count(self, req: InferenceRequest) -> int:
        """An estimate (no upstream has a counting route we can rely on): the one billing uses
        when a deployment reports no usage, so a count and such a bill agree."""
        return estimate_prompt(req)

    def bound(self, req: InferenceRequest) -> Bound:
        req.payload.json()  # strict JSON, before admission (a 400 now, never a failure later)
        n = max(req.n, req.features.best_of or 1)
        choices = n * (1 if req.kind == "chat" else len(req.prompts))
        per = per_choice(self.spec, req.max_tokens, req.max_tokens_param)
        check_request_cap(self.spec, per, choices, n, req.max_tokens_param)
        window = self.spec.context_length
        if req.kind == "chat":
            prompt = min(req.body_bytes, window)
        else:
            prompt = sum(min(b, window) for b in req.prompt_bytes)
        return Bound(prompt, per * choices)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> UpstreamRun:
        return UpstreamRun(self, req, request_id)


class UpstreamRun:
    def __init__(self, backend: UpstreamBackend, req: InferenceRequest, request_id: str):
        self._router = backend.router
        self._req = req
        self._request_id = request_id
        self._payload = _payload(backend.spec, req)
        self._answer: Answer | None = None
        self._seen = Seen()
        self._produced = False  # the upstream may have worked on it: bill (an estimate) if so
        self._relayed = False
        self._first_token: float | None = None

    @property
    def prompt_tokens(self) -> int:
        usage = self._seen.usage
        return reply.count(usage.get("prompt_tokens")) if usage else 0

    async def begin(self) -> None:
        path = "/chat/completions" if self._req.kind == "chat" else "/completions"
        try:
            self._answer = await self._router.open(
                path,
                self._payload,
                stream=self._req.stream,
                request_id=self._request_id,
                background=self._req.background,
            )
        except asyncio.CancelledError:
            # The client left while an upstream worked: billed for its prompt (estimated).
            self._produced = True
            raise
        except ClientFault as fault:
            raise client_error(fault) from None
        self._produced = True

    async def events(self) -> AsyncIterator[Event]:
        answer = self._answer
        assert answer is not None, "begin() first"
        self._relayed = True
        if answer.body is not None:  # a whole answer
            self._router.finish(answer)
            body = answer.body
            self._seen = reply.answer_seen(body)
            for event in _choice_events(body, "message"):
                yield event
            return
        failure: UpstreamFailure | None = None
        ok = False
        try:
            assert answer.first is not None and answer.rest is not None
            for event in self._observe(answer.first):
                yield event
            async for item in answer.rest:
                for event in self._observe(item):
                    yield event
            ok = True
        except UpstreamFailure as exc:
            failure = exc
            log.warning("request %s: upstream stream failed: %s", self._request_id, exc)
            raise UpstreamError(
                "The upstream server failed while streaming; you were billed only for the "
                "tokens you received."
            ) from None
        finally:
            answer.close(reuse=ok)
            self._router.finish(answer, failure)

    def _observe(self, item: JSON) -> list[Event]:
        if not reply.observe(self._seen, item):
            return []
        if self._first_token is None and self._seen.pieces:
            self._first_token = time.monotonic()
        return _choice_events(item, "delta")

    def abandon(self) -> None:
        """The client left before the first event was relayed: close the upstream request and
        free its slot; what the upstream had sent (one event at most) is billed."""
        answer = self._answer
        if answer is None or self._relayed:
            return
        self._relayed = True
        answer.close(reuse=False)
        self._router.finish(answer)
        if answer.first is not None:
            reply.observe(self._seen, answer.first)

    async def tally(self) -> Tally:
        seen = self._seen
        estimated = False
        cached = 0
        if seen.usage is not None:
            prompt = reply.count(seen.usage.get("prompt_tokens"))
            completion = reply.count(seen.usage.get("completion_tokens"))
            cached = reply.cached_count(seen.usage)
        elif self._produced:
            # No usage from upstream: estimate what was seen. A streamed piece is one token on
            # every server we know; a whole answer is estimated from its length.
            estimated = True
            prompt = estimate_prompt(self._req)
            completion = seen.pieces or math.ceil(seen.chars / CHARS_PER_TOKEN)
        else:
            prompt = completion = 0
        answer = self._answer
        return Tally(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
            started=self._produced,
            estimated=estimated,
            finish=seen.finish[:32] if seen.finish else None,  # the usage column's width
            deployment=answer.deployment.name if answer is not None else None,
            first_token=self._first_token,
        )


def _payload(spec: ModelSpec, req: InferenceRequest) -> JSON:
    """The client's body as the upstream gets it: TokenDock's defaults where none was sent."""
    payload = req.payload.json()
    if req.kind == "chat":
        if spec.max_output_tokens and req.max_tokens is None:
            payload["max_tokens"] = spec.output_cap  # the model's cap applies
    else:
        payload.setdefault("max_tokens", req.max_tokens)  # TokenDock's default, not theirs
    if req.stream:
        options = payload.get("stream_options")
        options = options if isinstance(options, dict) else {}
        payload["stream_options"] = {**options, "include_usage": True}  # always bill exactly
    return payload


def estimate_prompt(req: InferenceRequest) -> int:
    """A prompt's tokens without a tokenizer: 4 characters a token over the turns' text, their
    tool calls and the offered tools, plus a few tokens a turn for what a chat template adds;
    a text prompt's characters / 4, a token-id prompt's ids."""
    if req.kind != "chat":
        chars = sum(len(p) for p in req.prompts if isinstance(p, str))
        ids = sum(len(p) for p in req.prompts if not isinstance(p, str))
        return ids + math.ceil(chars / CHARS_PER_TOKEN)
    chars = 0
    for turn in req.turns:
        chars += len(turn.content)
        chars += sum(len(c.name) + len(c.arguments) for c in turn.tool_calls)
    if req.tools is not None and req.tools.active:
        for tool in req.tools.tools:
            chars += len(tool.name) + len(tool.description)
            chars += len(orjson.dumps(tool.parameters)) if tool.parameters is not None else 0
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_TURN * (len(req.turns) + 1)


# Fields of a message / delta, and of a choice, that the events carry typed: every other one
# an upstream sends (audio, annotations, reasoning_content, reasoning, reasoning_details …;
# vLLM's choice-level `stop_reason`) is relayed as it came, in the event's `extra`.
TYPED_MESSAGE = frozenset(("role", "content", "tool_calls", "refusal", "function_call"))
TYPED_CHOICE = frozenset(("index", "message", "delta", "text", "logprobs", "finish_reason"))


def _choice_events(item: JSON, field: str) -> list[Event]:
    """The typed events of one chunk (`field` "delta") or answer ("message"); text completions
    carry `text` instead. Values an upstream got wrong are dropped, not relayed; fields the
    events do not type are relayed as they came (`extra`)."""
    events: list[Event] = []
    for position, choice in enumerate(item.get("choices") or ()):
        if not isinstance(choice, dict):
            continue
        given = choice.get("index")
        index = given if isinstance(given, int) and reply.is_count(given) else position
        message = choice.get(field)
        logprobs = choice.get("logprobs")
        logprobs = logprobs if isinstance(logprobs, dict) else None
        if isinstance(message, dict):
            text = message.get("content")
            calls = message.get("tool_calls")
            refusal = message.get("refusal")
            tool_calls = tuple(c for c in calls if isinstance(c, dict)) if calls else None
            events.append(
                Delta(
                    index,
                    text if isinstance(text, str) else "",
                    tool_calls or None,
                    logprobs,
                    refusal if isinstance(refusal, str) else None,
                    _function_call(message.get("function_call")),
                    _extra(message, TYPED_MESSAGE),
                )
            )
        else:
            text = choice.get("text")
            events.append(Delta(index, text if isinstance(text, str) else "", None, logprobs))
        reason = reply.finish_of(choice)
        if reason is not None:
            events.append(Finish(index, reason[:32], extra=_extra(choice, TYPED_CHOICE)))
    return events


def _extra(fields: JSON, typed: frozenset[str]) -> JSON | None:
    """The fields of `fields` not in `typed`, as they came (None when there are none)."""
    if fields.keys() <= typed:
        return None
    return {k: v for k, v in fields.items() if k not in typed}


def _function_call(value: object) -> JSON | None:
    """The deprecated `function_call` of a message or delta: its string `name` / `arguments`."""
    if not isinstance(value, dict):
        return None
    kept = {k: value[k] for k in ("name", "arguments") if isinstance(value.get(k), str)}
    return kept or None


def client_error(fault: ClientFault) -> TokenDockError:
    message = str(fault.error.get("message") or "The upstream server refused the request.")
    if fault.status == 413:
        return RequestTooLarge(message)
    param = fault.error.get("param")
    code = fault.error.get("code")
    return InvalidRequest(
        message,
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )

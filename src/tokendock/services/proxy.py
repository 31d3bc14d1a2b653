"""Chat and text completions served by upstream deployments: admit → route → relay → settle.

The flow, top to bottom:
  1. bound the request before it is sent: prompt tokens ≤ its UTF-8 bytes (byte-level
     tokenizers emit at most one token per byte; the JSON syntax around each message covers
     its template tokens) and ≤ the context window; completion ≤ max_tokens (or the window)
     per choice;
  2. admit (services/gate.py): allow-list, rate limits, one credit hold for that worst case;
  3. route (inference/router.py): balanced over healthy deployments, retried on another before
     the first byte reaches the client, never after;
  4. relay: bodies and stream events keep the upstream's fields, re-stamped with TokenDock's own
     `id` and the public `model`; usage is always asked of the upstream and the extra usage
     chunk is dropped unless the client asked for it;
  5. settle exactly once from the upstream's usage (an explicit zero is a real zero); when it
     sent none — a stream cut by the client or the upstream — the tokens seen are estimated
     and the usage record says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from tokendock.billing.ledger import Settlement, UsageRow
from tokendock.billing.money import format_credits
from tokendock.errors import (
    InvalidRequest,
    ModelNotFound,
    RequestTooLarge,
    TokenDockError,
    UpstreamError,
)
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.router import Router
from tokendock.inference.upstream import Answer, ClientFault, UpstreamFailure
from tokendock.protocol.chat import ChatCompletionRequest, message_text
from tokendock.protocol.completions import CompletionRequest
from tokendock.services import upstream_reply as reply
from tokendock.services.budget import check_request_cap, per_choice
from tokendock.services.gate import Admitted, AdmittedRun, Gate
from tokendock.services.upstream_reply import JSON, Seen
from tokendock.storage.accounts import KeyRow

log = logging.getLogger(__name__)

Kind = Literal["chat", "text"]
CHARS_PER_TOKEN = 4  # for estimates only, when an upstream reports no usage


@dataclass(slots=True)
class ProxyRun(AdmittedRun):
    """An admitted upstream request and what was seen of its answer."""

    kind: Kind
    model: str
    key: KeyRow
    admitted: Admitted
    request_id: str
    payload: JSON
    prompt_chars: int
    include_usage: bool
    user: str | None
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    deployment: str | None = None
    settlement: Settlement | None = None
    relayed: bool = False  # the stream's relay ran its cleanup
    billed: tuple[int, int] = (0, 0)  # prompt and completion tokens charged

    @property
    def stream(self) -> bool:
        return bool(self.payload.get("stream"))


class ProxyService:
    def __init__(self, models: ModelRegistry, gate: Gate):
        self._models = models
        self._gate = gate
        self._settling: set[asyncio.Task[Settlement | None]] = set()

    def serves(self, model: str) -> bool:
        return self._models.router(model) is not None

    async def admit_chat(
        self, key: KeyRow, req: ChatCompletionRequest, body: bytes, request_id: str
    ) -> ProxyRun:
        """`req` is the validated form of `body`; the upstream gets `body`'s own fields."""
        req.check_common()  # everything else is the upstream's to accept or refuse
        spec = self._models.spec(req.model)
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        n = req.n or 1
        per = per_choice(spec, req.token_limit(), param)
        check_request_cap(spec, per, n, n, param)
        payload = reply.strict_payload(body)
        if spec.max_output_tokens and req.token_limit() is None:
            payload["max_tokens"] = per  # the model's cap applies when none was asked for
        chars = sum(len(message_text(m)) for m in req.messages)
        # The whole body bounds the prompt: tools and schemas count as prompt tokens upstream.
        prompt_bound = min(len(body), spec.context_length)
        return await self._admit(
            "chat", key, req.model, payload, request_id, chars, prompt_bound, per * n
        )

    async def admit_text(
        self, key: KeyRow, req: CompletionRequest, body: bytes, request_id: str
    ) -> ProxyRun:
        req.check_common()
        req.check_bounds()
        spec = self._models.spec(req.model)
        prompts = req.prompts()
        n = max(req.n or 1, req.best_of or 1)
        per = per_choice(spec, req.max_tokens, "max_tokens")
        check_request_cap(spec, per, n * len(prompts), n, "max_tokens")
        payload = reply.strict_payload(body)
        payload.setdefault("max_tokens", req.max_tokens)  # TokenDock's default, not theirs
        chars = sum(len(p) if isinstance(p, str) else len(p) * CHARS_PER_TOKEN for p in prompts)
        # Each prompt is bounded on its own: one context window for each, not for all.
        window = spec.context_length
        prompt_bound = sum(min(bound, window) for bound in req.prompt_bounds())
        return await self._admit(
            "text", key, req.model, payload, request_id, chars, prompt_bound, per * n * len(prompts)
        )

    async def _admit(
        self,
        kind: Kind,
        key: KeyRow,
        model: str,
        payload: JSON,
        request_id: str,
        prompt_chars: int,
        prompt_bound: int,
        max_completion: int,
    ) -> ProxyRun:
        admitted = await self._gate.admit(key, model, prompt_bound, max_completion, request_id)
        include_usage = False
        if payload.get("stream"):
            options = payload.get("stream_options")
            options = options if isinstance(options, dict) else {}
            include_usage = bool(options.get("include_usage"))
            payload["stream_options"] = {**options, "include_usage": True}
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        user = payload.get("user")
        return ProxyRun(
            kind,
            model,
            key,
            admitted,
            request_id,
            payload,
            prompt_chars,
            include_usage,
            user if isinstance(user, str) else None,
            id=f"{prefix}-{secrets.token_hex(12)}",
        )

    async def open(self, run: ProxyRun) -> Answer:
        """Route the request until a deployment commits to an answer. On failure the hold is
        released (nothing was produced) and the client's error is raised."""
        router = self._router(run.model)
        path = "/chat/completions" if run.kind == "chat" else "/completions"
        try:
            answer = await router.open(
                path, run.payload, stream=run.stream, request_id=run.request_id
            )
        except BaseException as exc:
            # A client that left while the upstream worked is billed for its prompt (estimated:
            # the upstream never said); a request no deployment answered costs nothing.
            gone = isinstance(exc, asyncio.CancelledError)
            await self._settle(
                run, Seen(), "client_disconnected" if gone else "error", produced=gone
            )
            if isinstance(exc, ClientFault):
                raise _client_error(exc) from None
            raise
        run.deployment = answer.deployment.name
        return answer

    async def complete(self, run: ProxyRun) -> JSON:
        """A non-streaming answer, re-stamped and settled."""
        answer = await self.open(run)
        router = self._router(run.model)
        router.finish(answer)
        body = answer.body or {}
        body["id"] = run.id
        body["model"] = run.model
        seen = reply.answer_seen(body)
        await self._settle(run, seen, "ok")
        return body

    async def events(self, run: ProxyRun, answer: Answer) -> AsyncIterator[JSON]:
        """The stream's events for the client. Ends with the usage event when the client asked;
        a failure after the first event raises UpstreamError (the web layer sends it as an error
        event). Closing early (client gone) closes the upstream connection, which stops its
        generation, and the request is billed for what was seen."""
        router = self._router(run.model)
        seen = Seen()
        failure: UpstreamFailure | None = None
        status = "client_disconnected"
        usage_events: list[JSON] = []

        def relay(item: JSON) -> JSON | None:
            """The event as the client gets it, or None when it is not for the client."""
            item["id"] = run.id
            item["model"] = run.model
            if not reply.observe(seen, item):
                if seen.usage is not None:
                    usage_events[:] = [item]  # sent after settlement, with the cost
                return None
            if not run.include_usage and "usage" in item:
                del item["usage"]
            if run.first_token is None and seen.pieces:
                run.first_token = time.monotonic()
            return item

        try:
            assert answer.first is not None and answer.rest is not None
            out = relay(answer.first)
            if out is not None:
                yield out
            async for item in answer.rest:
                out = relay(item)
                if out is not None:
                    yield out
            status = "ok"
        except UpstreamFailure as exc:
            failure = exc
            status = "error"
            log.warning("request %s: upstream stream failed: %s", run.request_id, exc)
            raise UpstreamError(
                "The upstream server failed while streaming; you were billed only for the "
                "tokens you received."
            ) from None
        finally:
            run.relayed = True
            answer.close(reuse=status == "ok")
            router.finish(answer, failure)
            await self._settle(run, seen, status)
        if run.include_usage:
            usage_event = usage_events[0] if usage_events else None
            if usage_event is None:  # the upstream sent none: report what was billed
                usage_event = {
                    "id": run.id,
                    "object": "chat.completion.chunk" if run.kind == "chat" else "text_completion",
                    "created": run.created,
                    "model": run.model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": run.billed[0],
                        "completion_tokens": run.billed[1],
                        "total_tokens": run.billed[0] + run.billed[1],
                    },
                }
            if run.settlement is not None:
                usage_event["usage"]["cost"] = format_credits(run.settlement.charged)
            yield usage_event

    async def abandon(self, run: ProxyRun, answer: Answer) -> None:
        """The client left before the stream's first event was relayed: close the upstream
        request, free its slot and bill what the upstream had sent (one event at most)."""
        if run.relayed:
            return
        run.relayed = True
        answer.close(reuse=False)
        self._router(run.model).finish(answer)
        seen = Seen()
        if answer.first is not None:
            reply.observe(seen, answer.first)
        await self._settle(run, seen, "client_disconnected")

    async def _settle(
        self, run: ProxyRun, seen: Seen, status: str, *, produced: bool = True
    ) -> None:
        settling = asyncio.ensure_future(self._record(run, seen, status, produced))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        # Shielded: a cancelled consumer must not cancel the settlement itself.
        with contextlib.suppress(asyncio.CancelledError):
            run.settlement = await asyncio.shield(settling)

    async def _record(
        self, run: ProxyRun, seen: Seen, status: str, produced: bool
    ) -> Settlement | None:
        estimated = False
        if seen.usage is not None:
            prompt = reply.count(seen.usage.get("prompt_tokens"))
            completion = reply.count(seen.usage.get("completion_tokens"))
        elif produced:
            # No usage from upstream: estimate what was seen. A streamed piece is one token on
            # every server we know; a whole answer is estimated from its length.
            estimated = True
            prompt = math.ceil(run.prompt_chars / CHARS_PER_TOKEN)
            completion = seen.pieces or math.ceil(seen.chars / CHARS_PER_TOKEN)
        else:
            prompt = completion = 0
        run.billed = (prompt, completion)
        now = time.monotonic()
        usage = UsageRow(
            request_id=run.request_id,
            model=run.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            finish_reason=seen.finish[:32] if seen.finish else None,  # the column's width
            latency_ms=int((now - run.started) * 1000),
            ttft_ms=None
            if run.first_token is None
            else int((run.first_token - run.started) * 1000),
            user=run.user,
            deployment=run.deployment,
            estimated=estimated,
        )
        # Usage above the hold is charged in full up to the balance; the ledger logs it.
        return await self._gate.settle(run.admitted, prompt, completion, usage)

    def _router(self, model: str) -> Router:
        router = self._models.router(model)
        if router is None:
            raise ModelNotFound(model)
        return router

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _client_error(fault: ClientFault) -> TokenDockError:
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

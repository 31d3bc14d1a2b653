"""Chat and text completions: the one place where keys, credits and inference meet.

The flow, top to bottom:
  1. find the engine for the public model id (404 when unknown);
  2. check request rules the schema cannot express (400 naming the field);
  3. render and tokenize the prompt: exact counts from the model's tokenizer;
  4. refuse prompt + max_tokens over the context window before any generation;
  5. admit (services/gate.py): the key's model allow-list (403), rate limits (429), then ONE
     atomic hold of the worst case (prompt + Σ max_tokens at the model's prices) (402);
  6. submit every choice to the engine at once and merge their events;
  7. settle exactly once — also when the client vanished or the engine failed — charging what
     the engine produced (prompt + sampled tokens; nothing if no choice ever started), releasing
     the rest, and writing the usage record in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tokendock.billing.ledger import Settlement, UsageRow
from tokendock.catalog import ModelSpec
from tokendock.errors import (
    ContextLengthExceeded,
    InvalidRequest,
)
from tokendock.inference.base import ChatTurn, Engine, Generation, Sampling, TextDelta
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.templates import ChatTemplateError
from tokendock.protocol.chat import ChatCompletionRequest, message_text
from tokendock.protocol.common import SamplingFields
from tokendock.protocol.completions import CompletionRequest
from tokendock.services.gate import Admitted, AdmittedRun, Gate
from tokendock.storage.accounts import KeyRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Plan:
    engine: Engine
    model: str
    prompt_tokens: int
    jobs: list[Generation]
    prefixes: list[str] = field(default_factory=list)  # echoed prompt text per choice
    user: str | None = None


@dataclass(slots=True)
class Run(AdmittedRun):
    """An admitted request: its plan, the credit hold, and (once settled) the settlement."""

    plan: Plan
    key: KeyRow
    admitted: Admitted
    request_id: str
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    settlement: Settlement | None = None
    streaming: bool = False  # stream() began (and so will settle)


@dataclass(frozen=True, slots=True)
class Choice:
    text: str
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class ChoiceEvent:
    """A piece of one choice: text, or its end (`finish_reason` set)."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


class CompletionService:
    def __init__(self, models: ModelRegistry, gate: Gate):
        self._models = models
        self._gate = gate
        self._settling: set[asyncio.Task[Settlement | None]] = set()

    async def plan_chat(self, req: ChatCompletionRequest) -> Plan:
        engine = self._models.engine(req.model)
        spec = self._models.spec(req.model)
        req.check()
        turns = [ChatTurn(m.role, message_text(m)) for m in req.messages]
        try:
            prompt_text = engine.render_chat(turns)
        except ChatTemplateError as exc:
            raise InvalidRequest(
                f"The model's chat template rejected the messages: {exc}", param="messages"
            ) from exc
        tokens = await engine.tokenize(prompt_text, chat=True)
        max_tokens = _completion_budget(engine, len(tokens), req.token_limit(), "messages")
        sampling = _sampling(spec, req, engine)
        n = req.n or 1
        jobs = [
            Generation(tokens, max_tokens, req.stop_list(), _seeded(sampling, i)) for i in range(n)
        ]
        return Plan(engine, req.model, len(tokens), jobs, user=req.user)

    async def plan_text(self, req: CompletionRequest) -> Plan:
        engine = self._models.engine(req.model)
        spec = self._models.spec(req.model)
        req.check()
        sampling = _sampling(spec, req, engine)
        n = req.n or 1
        jobs: list[Generation] = []
        prefixes: list[str] = []
        prompt_tokens = 0
        for prompt in req.prompts():
            if isinstance(prompt, str):
                tokens = await engine.tokenize(prompt, chat=False)
                text = prompt
            else:
                _check_token_ids(prompt, engine.vocab_size)
                tokens, text = prompt, engine.detokenize(prompt)
            prompt_tokens += len(tokens)
            max_tokens = _completion_budget(engine, len(tokens), req.max_tokens, "prompt")
            for _ in range(n):
                jobs.append(
                    Generation(tokens, max_tokens, req.stop_list(), _seeded(sampling, len(jobs)))
                )
                prefixes.append(text if req.echo else "")
        return Plan(engine, req.model, prompt_tokens, jobs, prefixes, user=req.user)

    async def admit(self, key: KeyRow, plan: Plan, request_id: str) -> Run:
        max_completion = sum(job.max_tokens for job in plan.jobs)
        admitted = await self._gate.admit(
            key, plan.model, plan.prompt_tokens, max_completion, request_id
        )
        return Run(plan, key, admitted, request_id)

    async def complete(self, run: Run) -> list[Choice]:
        """All choices, then settlement (awaited, so the response can carry the cost)."""
        texts = [""] * len(run.plan.jobs)
        ends: list[tuple[str, int]] = [("stop", 0)] * len(run.plan.jobs)
        async for ev in self.stream(run):
            if ev.finish_reason is None:
                texts[ev.index] += ev.text
            else:
                ends[ev.index] = (ev.finish_reason, ev.completion_tokens)
        return [Choice(t, r, n) for t, (r, n) in zip(texts, ends, strict=True)]

    async def stream(self, run: Run) -> AsyncIterator[ChoiceEvent]:
        """Events of all choices, merged; each choice ends with one event with a finish_reason.
        When the iteration ends, `run.settlement` is set.

        Closing this iterator (client gone) cancels every choice still running, and the
        request is still settled for what the engine produced.
        """
        plan = run.plan
        run.streaming = True
        merged: asyncio.Queue[ChoiceEvent | BaseException] = asyncio.Queue()

        async def pump(index: int, job: Generation) -> None:
            try:
                async for event in plan.engine.generate(job):
                    if isinstance(event, TextDelta):
                        merged.put_nowait(ChoiceEvent(index, event.text))
                    else:
                        merged.put_nowait(
                            ChoiceEvent(index, "", event.reason, event.completion_tokens)
                        )
            except Exception as exc:
                merged.put_nowait(exc)

        status = "client_disconnected"
        reasons: list[str] = []
        tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(plan.jobs)]
        try:
            for i, prefix in enumerate(plan.prefixes):
                if prefix:
                    yield ChoiceEvent(i, prefix)
            remaining = len(tasks)
            while remaining:
                item = await merged.get()
                if isinstance(item, BaseException):
                    status = "error"
                    raise item
                if item.finish_reason is not None:
                    remaining -= 1
                    reasons.append(item.finish_reason)
                elif run.first_token is None and item.text:
                    run.first_token = time.monotonic()
                yield item
            status = "ok"
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finish = reasons[0] if len(set(reasons)) == 1 else ("mixed" if reasons else None)
            settling = asyncio.ensure_future(self._settle(run, status, finish))
            self._settling.add(settling)
            settling.add_done_callback(self._settling.discard)
            # Shielded: a cancelled consumer must not cancel the settlement itself.
            with contextlib.suppress(asyncio.CancelledError):
                run.settlement = await asyncio.shield(settling)

    async def abandon(self, run: Run) -> None:
        """The client left before the stream began: nothing was generated; release the hold."""
        if run.streaming:
            return
        run.streaming = True
        for job in run.plan.jobs:
            job.meter.done.set()
        settling = asyncio.ensure_future(self._settle(run, "client_disconnected", None))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        with contextlib.suppress(asyncio.CancelledError):
            run.settlement = await asyncio.shield(settling)

    async def _settle(self, run: Run, status: str, finish: str | None) -> Settlement | None:
        meters = [job.meter for job in run.plan.jobs]
        try:
            # The engine stops within one token of a cancel; wait for its final count.
            await asyncio.wait_for(asyncio.gather(*(m.done.wait() for m in meters)), 30)
        except TimeoutError:
            log.error(
                "engine did not finish request %s in time; billing what it counted", run.request_id
            )
        started = any(m.started for m in meters)
        completion = sum(m.tokens for m in meters)
        prompt = run.plan.prompt_tokens if started else 0
        now = time.monotonic()
        usage = UsageRow(
            request_id=run.request_id,
            model=run.plan.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            status=status,
            finish_reason=finish,
            latency_ms=int((now - run.started) * 1000),
            ttft_ms=None
            if run.first_token is None
            else int((run.first_token - run.started) * 1000),
            user=run.plan.user,
        )
        return await self._gate.settle(run.admitted, prompt, completion, usage)

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)


def _completion_budget(engine: Engine, prompt_len: int, requested: int | None, what: str) -> int:
    window = engine.context_length
    if requested is None:
        if prompt_len >= window:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {window} tokens. However, your "
                f"{what} resulted in {prompt_len} tokens. Please reduce the length of the {what}.",
                param=what,
            )
        return window - prompt_len
    if prompt_len + requested > window:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the {what}, {requested} in the "
            f"completion). Please reduce the length of the {what} or completion.",
            param=what,
        )
    return requested


def _sampling(spec: ModelSpec, req: SamplingFields, engine: Engine) -> Sampling:
    bias = req.logit_bias_ids()
    vocab = engine.vocab_size
    for token in bias:
        if token >= vocab:
            raise InvalidRequest(
                f"Invalid 'logit_bias': token id {token} is outside the model's vocabulary "
                f"(0..{vocab - 1}).",
                param="logit_bias",
            )
    d = spec.sampling
    return Sampling(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=d.top_k,
        min_p=d.min_p,
        repeat_penalty=d.repeat_penalty,
        penalty_last_n=d.penalty_last_n,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        seed=None if req.seed is None else req.seed & 0xFFFFFFFF,
        logit_bias=bias,
    )


def _seeded(sampling: Sampling, index: int) -> Sampling:
    """Each choice samples independently; with a seed, choice i uses seed + i (reproducible)."""
    seed = secrets.randbits(32) if sampling.seed is None else (sampling.seed + index) & 0xFFFFFFFF
    return dataclasses.replace(sampling, seed=seed)


def _check_token_ids(tokens: Sequence[int], vocab: int) -> None:
    for token in tokens:
        if token >= vocab:
            raise InvalidRequest(
                f"Invalid 'prompt': token id {token} is outside the model's vocabulary "
                f"(0..{vocab - 1}).",
                param="prompt",
            )

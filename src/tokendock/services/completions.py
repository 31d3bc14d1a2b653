"""Chat and text completions: the one place where keys, credits and inference meet.

The flow, top to bottom — nothing that grows with the input's tokens happens before step 3:
  1. bound (`plan_chat` / `plan_text`, cheap): find the engine for the public model id (404),
     check request rules and structural bounds (400 naming the field: protocol/bounds.py), the
     model's output caps (`max_output_tokens` per choice, `max_request_output_tokens` per
     request), and bound the prompt's tokens from its UTF-8 bytes (≤ the context window);
  2. admit (services/gate.py): the key's model allow-list (403), rate limits (429), then ONE
     atomic hold of that worst case at the model's prices (402);
  3. prepare (`prepare`): render and tokenize the prompt — exact counts from the model's own
     tokenizer — and refuse prompt + max_tokens over the context window (400); a refusal or a
     client gone here releases the hold;
  4. submit every choice to the engine at once and merge their events;
  5. settle exactly once — also when the client vanished or the engine failed — charging what
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
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field

from tokendock.billing.ledger import Settlement, UsageRow
from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest
from tokendock.inference.base import ChatTurn, Engine, Generation, Sampling, TextDelta
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.templates import ChatTemplateError
from tokendock.protocol.chat import ChatCompletionRequest, message_text
from tokendock.protocol.common import SamplingFields
from tokendock.protocol.completions import CompletionRequest
from tokendock.services.budget import check_request_cap, completion_budget, per_choice
from tokendock.services.gate import Admitted, AdmittedRun, Gate
from tokendock.storage.accounts import KeyRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    turns: tuple[ChatTurn, ...]


Prompt = ChatPrompt | str | list[int]  # a conversation, a text, or token ids


@dataclass(frozen=True, slots=True)
class Plan:
    """A bounded request, before any tokenizing: what admission needs and what `prepare`
    turns into engine jobs."""

    engine: Engine
    model: str
    prompts: list[Prompt]
    n: int
    max_tokens: int | None  # per choice as requested; None: up to `output_cap`
    output_cap: int
    stop: tuple[str, ...]
    sampling: Sampling
    prompt_bound: int  # prompt tokens at most, over all prompts (from bytes)
    max_completion: int  # completion tokens at most, over all choices
    param: str  # the field a context-window refusal names
    echo: bool = False
    user: str | None = None


@dataclass(slots=True)
class Run(AdmittedRun):
    """An admitted request: its plan, the credit hold, its jobs once prepared, and (once
    settled) the settlement."""

    plan: Plan
    key: KeyRow
    admitted: Admitted
    request_id: str
    started: float = field(default_factory=time.monotonic)
    first_token: float | None = None
    settlement: Settlement | None = None
    streaming: bool = False  # stream() began (and so will settle)
    jobs: list[Generation] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)  # echoed prompt text per choice
    prompt_tokens: int = 0


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
        self._settling: set[asyncio.Future[Settlement | None]] = set()

    def plan_chat(self, req: ChatCompletionRequest) -> Plan:
        engine = self._models.engine(req.model)
        spec = self._models.spec(req.model)
        req.check()
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        n = req.n or 1
        per = per_choice(spec, req.token_limit(), param)
        check_request_cap(spec, per, n, n, param)
        turns = tuple(ChatTurn(m.role, message_text(m)) for m in req.messages)
        return Plan(
            engine,
            req.model,
            [ChatPrompt(turns)],
            n,
            req.token_limit(),
            spec.output_cap,
            req.stop_list(),
            _sampling(spec, req, engine),
            prompt_bound=min(req.prompt_bound(), engine.context_length),
            max_completion=per * n,
            param="messages",
            user=req.user,
        )

    def plan_text(self, req: CompletionRequest) -> Plan:
        engine = self._models.engine(req.model)
        spec = self._models.spec(req.model)
        req.check()
        n = req.n or 1
        prompts: list[Prompt] = list(req.prompts())
        per = per_choice(spec, req.max_tokens, "max_tokens")
        check_request_cap(spec, per, n * len(prompts), n, "max_tokens")
        for prompt in prompts:
            if isinstance(prompt, list):
                _check_token_ids(prompt, engine.vocab_size)
        window = engine.context_length
        return Plan(
            engine,
            req.model,
            prompts,
            n,
            req.max_tokens,
            spec.output_cap,
            req.stop_list(),
            _sampling(spec, req, engine),
            prompt_bound=sum(min(b, window) for b in req.prompt_bounds()),
            max_completion=per * n * len(prompts),
            param="prompt",
            echo=req.echo,
            user=req.user,
        )

    async def admit(self, key: KeyRow, plan: Plan, request_id: str) -> Run:
        admitted = await self._gate.admit(
            key, plan.model, plan.prompt_bound, plan.max_completion, request_id
        )
        return Run(plan, key, admitted, request_id)

    async def prepare(self, run: Run) -> None:
        """Tokenize the admitted request and make its engine jobs. A refusal (the context
        window) or a cancellation (client gone) releases the hold before it propagates."""
        try:
            await self._prepare(run)
        except BaseException:
            run.streaming = True  # settled here: abandon() must not settle again
            await self._to_the_end(self._gate.release(run.admitted))
            raise

    async def _prepare(self, run: Run) -> None:
        plan = run.plan
        engine = plan.engine
        owner = f"account:{run.key.account_id}"  # the engine is fair between accounts
        for prompt in plan.prompts:
            if isinstance(prompt, ChatPrompt):
                tokens = await _chat_tokens(engine, prompt.turns)
                text = ""
            elif isinstance(prompt, str):
                tokens = await engine.tokenize(prompt, chat=False)
                text = prompt
            else:
                tokens = prompt
                text = engine.detokenize(prompt) if plan.echo else ""
            run.prompt_tokens += len(tokens)
            max_tokens = completion_budget(
                engine.context_length, len(tokens), plan.max_tokens, plan.output_cap, plan.param
            )
            for _ in range(plan.n):
                sampling = _seeded(plan.sampling, len(run.jobs))
                job = Generation(tokens, max_tokens, plan.stop, sampling, owner=owner)
                run.jobs.append(job)
                run.prefixes.append(text if plan.echo else "")

    async def complete(self, run: Run) -> list[Choice]:
        """All choices, then settlement (awaited, so the response can carry the cost)."""
        texts = [""] * len(run.jobs)
        ends: list[tuple[str, int]] = [("stop", 0)] * len(run.jobs)
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
        run.streaming = True
        merged: asyncio.Queue[ChoiceEvent | BaseException] = asyncio.Queue()

        async def pump(index: int, job: Generation) -> None:
            try:
                async for event in run.plan.engine.generate(job):
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
        tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(run.jobs)]
        try:
            for i, prefix in enumerate(run.prefixes):
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
            run.settlement = await self._to_the_end(self._settle(run, status, finish))

    async def abandon(self, run: Run) -> None:
        """The client left before the stream began: nothing was generated; release the hold."""
        if run.streaming:
            return
        run.streaming = True
        for job in run.jobs:
            job.meter.done.set()
        run.settlement = await self._to_the_end(self._settle(run, "client_disconnected", None))

    async def _to_the_end(self, work: Awaitable[Settlement | None]) -> Settlement | None:
        """Run a settlement (or release) to its end: shielded, so a cancelled caller cannot
        cancel it (None then), and tracked, so `drain()` waits for it at shutdown."""
        settling = asyncio.ensure_future(work)
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        with contextlib.suppress(asyncio.CancelledError):
            return await asyncio.shield(settling)
        return None

    async def _settle(self, run: Run, status: str, finish: str | None) -> Settlement | None:
        meters = [job.meter for job in run.jobs]
        try:
            # The engine stops within one token of a cancel; wait for its final count.
            await asyncio.wait_for(asyncio.gather(*(m.done.wait() for m in meters)), 30)
        except TimeoutError:
            log.error(
                "engine did not finish request %s in time; billing what it counted", run.request_id
            )
        started = any(m.started for m in meters)
        completion = sum(m.tokens for m in meters)
        prompt = run.prompt_tokens if started else 0
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


async def _chat_tokens(engine: Engine, turns: Sequence[ChatTurn]) -> list[int]:
    try:
        return await engine.tokenize_chat(turns)
    except ChatTemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from exc


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

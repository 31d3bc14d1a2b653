"""Chat and text completions: validate → render → count → plan choices → generate.

The flow (billing and rate limits slot in around `plan` and `finish`, in this module only):
  1. find the engine for the public model id (404 when unknown);
  2. check request rules the schema cannot express (400 naming the field);
  3. render and tokenize the prompt: exact counts from the model's tokenizer;
  4. refuse prompt + max_tokens over the context window before any generation;
  5. submit every choice to the engine at once and merge their events.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tokendock.catalog import ModelSpec
from tokendock.errors import ContextLengthExceeded, InvalidRequest
from tokendock.inference.base import ChatTurn, Engine, Finished, Generation, Sampling, TextDelta
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.templates import ChatTemplateError
from tokendock.protocol.chat import ChatCompletionRequest, message_text
from tokendock.protocol.common import SamplingFields
from tokendock.protocol.completions import CompletionRequest


@dataclass(frozen=True, slots=True)
class Plan:
    engine: Engine
    model: str
    prompt_tokens: int
    jobs: list[Generation]
    prefixes: list[str] = field(default_factory=list)  # echoed prompt text per choice


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
    def __init__(self, models: ModelRegistry):
        self._models = models

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
        return Plan(engine, req.model, len(tokens), jobs)

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
        return Plan(engine, req.model, prompt_tokens, jobs, prefixes)

    async def complete(self, plan: Plan) -> list[Choice]:
        results = await asyncio.gather(*(_collect(plan.engine, job) for job in plan.jobs))
        if plan.prefixes:
            results = [
                Choice(prefix + c.text, c.finish_reason, c.completion_tokens)
                for prefix, c in zip(plan.prefixes, results, strict=True)
            ]
        return results

    async def stream(self, plan: Plan) -> AsyncIterator[ChoiceEvent]:
        """Events of all choices, merged; each choice ends with one event with a finish_reason.

        Closing this iterator (client gone) cancels every choice still running.
        """
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

        tasks = [asyncio.create_task(pump(i, job)) for i, job in enumerate(plan.jobs)]
        try:
            for i, prefix in enumerate(plan.prefixes):
                if prefix:
                    yield ChoiceEvent(i, prefix)
            remaining = len(tasks)
            while remaining:
                item = await merged.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finish_reason is not None:
                    remaining -= 1
                yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def _collect(engine: Engine, job: Generation) -> Choice:
    parts: list[str] = []
    async for event in engine.generate(job):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        elif isinstance(event, Finished):
            return Choice("".join(parts), event.reason, event.completion_tokens)
    raise RuntimeError("engine stream ended without a Finished event")


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

"""The embedded llama.cpp engine as a `Backend` (inference/backend.py).

`bound` refuses what the engine cannot do (400 naming the field), applies the model's output
caps and bounds the prompt from its bytes (≤ the context window) — no tokenizer. `begin`
renders and tokenizes (exact counts; a prompt + max_tokens over the window is a 400), makes
one engine job per choice (per prompt × n) and refuses with a 503 when the engine's wait queue
is full (a batch line, `InferenceRequest.background`, is never refused: it queues in the
lowest priority class); `events` reads the run's one queue, which every job puts its events
into (tagged by choice), and shapes them; `tally` waits until the engine has stopped every job
and counts what it did: prompt + sampled tokens (and how many prompt tokens came from the
prefix cache), nothing if no job ever started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence

from tokendock.catalog import ModelSpec
from tokendock.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ModelNotReady,
    UnsupportedParameter,
)
from tokendock.inference.backend import (
    Bound,
    Delta,
    Event,
    Features,
    Finish,
    InferenceRequest,
    Tally,
    default_sampling,
)
from tokendock.inference.budget import check_request_cap, completion_budget, per_choice
from tokendock.inference.engine.base import (
    Engine,
    Finished,
    Generation,
    PromptScored,
    PromptScores,
    TextDelta,
)
from tokendock.inference.engine.inbox import Arrival, Inbox, raised
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.shaping import ChoiceShaper
from tokendock.inference.engine.templates import ChatTemplateError
from tokendock.inference.engine.tools import offer
from tokendock.inference.structured import answer_grammar
from tokendock.inference.vocabulary import ChatTurn, Grammar, Sampling

log = logging.getLogger(__name__)

ENGINE_STOP_SECONDS = 30  # the engine stops within one token of a cancel; this is a backstop


class EmbeddedBackend:
    def __init__(self, engine: Engine, spec: ModelSpec):
        self.engine = engine
        self.spec = spec

    @property
    def ready(self) -> bool:
        return self.engine.ready

    async def open(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    def bound(self, req: InferenceRequest) -> Bound:
        refuse_unsupported(req.features)
        per = per_choice(self.spec, req.max_tokens, req.max_tokens_param)
        choices = req.n * (1 if req.kind == "chat" else len(req.prompts))
        check_request_cap(self.spec, per, choices, req.n, req.max_tokens_param)
        check_choices(self.spec, choices, req.n)
        vocab = self.engine.vocab_size
        for token in req.logit_bias:
            if token >= vocab:
                raise InvalidRequest(
                    f"Invalid 'logit_bias': token id {token} is outside the model's vocabulary "
                    f"(0..{vocab - 1}).",
                    param="logit_bias",
                )
        for prompt in req.prompts:
            if not isinstance(prompt, str):
                _check_token_ids(prompt, vocab)
        window = self.engine.context_length
        check_prompt_bytes(req, window, self.engine.max_token_bytes)
        grammar = self.grammar(req)  # a schema it cannot enforce (or over a bound): a 400, now
        return Bound(sum(min(b, window) for b in req.prompt_bytes), per * choices, grammar)

    async def count(self, req: InferenceRequest) -> int:
        """Exact: the conversation with its tools as the model reads it (tools.offer), through
        the chat template and tokenizer (off the event loop when long); a text prompt's ids."""
        if not self.ready:
            raise ModelNotReady(f"The model '{self.spec.id}' is still loading; retry shortly.")
        if req.kind == "chat":
            return len(await _chat_tokens(self.engine, offer(req.turns, req.tools)))
        total = 0
        for prompt in req.prompts:
            total += (
                len(prompt)
                if not isinstance(prompt, str)
                else len(await self.engine.tokenize(prompt, chat=False))
            )
        return total

    def grammar(self, req: InferenceRequest) -> Grammar | None:
        """The answer's grammar, made once per request (in `bound`, which the pipeline runs off
        the event loop for a request with a schema), checked by llama.cpp's parser too."""
        grammar = answer_grammar(req.tools, req.output, logprobs=req.features.logprobs)
        engine = self.engine
        if grammar is not None and engine.ready and not engine.check_grammar(grammar.text):
            log.error("llama.cpp refused a generated grammar:\n%s", grammar.text)
            raise InvalidRequest(
                "The schema could not be turned into a grammar this model can follow.",
                param="tools" if req.tools is not None else "response_format",
            )
        return grammar

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> EmbeddedRun:
        grammar = bound.grammar if bound is not None else self.grammar(req)
        return EmbeddedRun(self, req, owner, request_id, grammar)


class EmbeddedRun:
    def __init__(
        self,
        backend: EmbeddedBackend,
        req: InferenceRequest,
        owner: str,
        rid: str,
        grammar: Grammar | None = None,
    ):
        self._grammar = grammar
        self._engine = backend.engine
        self._spec = backend.spec
        self._req = req
        self._owner = owner
        self._request_id = rid
        self.jobs: list[Generation] = []
        self._queued: list[Job] = []  # the jobs as the engine queued them (begin)
        self._inbox: Inbox | None = None  # where they all put their events (begin)
        self._submitted = False
        self.prefixes: list[str] = []  # echoed prompt text per choice
        self.shapers: list[ChoiceShaper] = []
        self._prompt_tokens = 0
        self._first_token: float | None = None
        self._reasons: list[str] = []

    @property
    def prompt_tokens(self) -> int:
        return self._prompt_tokens

    async def begin(self) -> None:
        req, engine = self._req, self._engine
        sampling = default_sampling(self._spec, req)
        grammar = self._grammar  # made and checked once, in bound (EmbeddedBackend.grammar)
        top = req.features.top_logprobs if req.features.logprobs else None
        if req.features.logprobs and top is None:
            top = 0
        param = "messages" if req.kind == "chat" else "prompt"
        prompts: Sequence[object] = [req.turns] if req.kind == "chat" else req.prompts
        for prompt in prompts:
            text = ""
            if isinstance(prompt, str):
                tokens = await engine.tokenize(prompt, chat=False)
                text = prompt
            elif req.kind == "chat":
                tokens = await _chat_tokens(engine, offer(req.turns, req.tools))
            else:
                assert isinstance(prompt, tuple)
                tokens = list(prompt)
                text = engine.detokenize(tokens) if req.echo else ""
            self._prompt_tokens += len(tokens)
            max_tokens = completion_budget(
                engine.context_length, len(tokens), req.max_tokens, self._spec.output_cap, param
            )
            scoring = req.echo and top is not None
            scores = PromptScores() if scoring else None  # the n choices score it once
            for _ in range(req.n):
                seeded = _seeded(sampling, len(self.jobs))
                self.jobs.append(
                    Generation(
                        tokens,
                        max_tokens,
                        req.stop,
                        seeded,
                        owner=self._owner,
                        grammar=grammar,
                        top_logprobs=top,
                        prompt_logprobs=scoring,
                        scores=scores,
                        background=req.background,
                    )
                )
                self.prefixes.append(text if req.echo else "")
                self.shapers.append(
                    ChoiceShaper(len(self.shapers), req.kind, req.tools, top is not None)
                )
        # Checked and queued at once: a 503 now, not a wait without end.
        self._inbox = Inbox(asyncio.get_running_loop())
        self._queued = engine.submit(self.jobs, self._owner, self._inbox)
        self._submitted = True

    async def events(self) -> AsyncIterator[Event]:
        """Events of all choices, as the engine made them; each choice ends with one Finish.
        Every job puts its events into the run's one inbox, tagged by choice: this coroutine
        reads it and shapes each event (no task per choice). Closing it cancels every choice
        still running."""
        queued, self._queued = self._queued, []  # from here on this reader owns them
        inbox, shapers = self._inbox, self.shapers
        try:
            for i, prefix in enumerate(self.prefixes):
                if prefix and not self.jobs[i].prompt_logprobs:
                    delta = shapers[i].prefix(prefix)
                    if delta is not None:
                        yield delta
            remaining = len(queued)
            while remaining and inbox is not None:
                for choice, item in await inbox.take():
                    for event in self._shape(choice, item):
                        if isinstance(event, Finish):
                            remaining -= 1
                            self._reasons.append(event.reason)
                        yield event
        finally:
            for job in queued:  # finished ones too: a no-op for them
                self._engine.cancel(job)

    def _shape(self, choice: int, item: Arrival) -> Sequence[Event]:
        """One engine event of choice `choice` as the run's events (an engine error raises)."""
        shaper = self.shapers[choice]
        out: Sequence[Event]
        if isinstance(item, TextDelta):
            out = shaper.text(item.text, item.logprobs)
        elif isinstance(item, Finished):
            out = shaper.finish(item.reason, item.stop_sequence)
        elif isinstance(item, PromptScored):  # the echoed prompt: not generated text
            prefix = shaper.prefix(self.prefixes[choice], item.tokens)
            return [prefix] if prefix is not None else []
        else:
            raise raised(item)
        if self._first_token is None and any(
            isinstance(e, Delta) and (e.text or e.tool_calls) for e in out
        ):
            self._first_token = time.monotonic()
        return out

    def abandon(self) -> None:
        """Nobody will read the events: queued jobs leave the queue now, running ones their
        slots within a step (billed for what they made); jobs never submitted are done."""
        if self._submitted:
            for job in self._queued:  # (none left once events() took them)
                self._engine.cancel(job)
            self._queued = []
            return
        for gen in self.jobs:
            gen.meter.done.set()

    async def tally(self) -> Tally:
        meters = [job.meter for job in self.jobs]
        try:
            await asyncio.wait_for(
                asyncio.gather(*(m.done.wait() for m in meters)), ENGINE_STOP_SECONDS
            )
        except TimeoutError:
            log.error(
                "engine did not finish request %s in time; billing what it counted",
                self._request_id,
            )
        started = any(m.started for m in meters)
        reasons = self._reasons
        finish = reasons[0] if len(set(reasons)) == 1 else ("mixed" if reasons else None)
        # n choices of a prompt share its evaluation: the first one's reuse is the prompt's.
        cached = sum(m.cached for m in meters[:: self._req.n]) if started else 0
        return Tally(
            prompt_tokens=self._prompt_tokens if started else 0,
            completion_tokens=sum(m.tokens for m in meters),
            cached_tokens=cached,
            started=started,
            finish=finish,
            first_token=self._first_token,
        )


def check_choices(spec: ModelSpec, choices: int, n: int) -> None:
    """A request with more choices than the slots plus one account's wait bound could never be
    queued, however idle the engine: a 400 naming `n` (a 503 would invite retries)."""
    most = spec.slots + spec.account_queue
    if choices > most:
        raise InvalidRequest(
            f"Invalid 'n': this request asks for {choices} choices (n = {n} per prompt); the "
            f"model '{spec.id}' takes at most {most} at once from one account.",
            param="n",
        )


def refuse_unsupported(f: Features) -> None:
    """What the embedded engine cannot do: a 400 naming the field."""
    if f.output_audio or (f.modalities and f.modalities != ("text",)):
        param = "audio" if f.output_audio else "modalities"
        raise UnsupportedParameter("Only text output is supported.", param=param)
    if f.prediction:
        raise UnsupportedParameter("'prediction' is not supported.", param="prediction")
    if f.suffix:
        raise UnsupportedParameter("'suffix' (insertion) is not supported.", param="suffix")
    if f.best_of is not None:
        raise UnsupportedParameter("'best_of' other than n is not supported.", param="best_of")
    if f.function_role is not None:
        raise UnsupportedParameter(
            "The 'function' role is deprecated and not supported.",
            param=f"messages[{f.function_role}].role",
        )
    if f.non_text_part is not None:
        message, part, kind = f.non_text_part
        where = f"messages[{message}].content[{part}]"
        raise InvalidRequest(
            f"Invalid '{where}': this model cannot take '{kind}' content, only text parts.",
            param=where,
        )


async def _chat_tokens(engine: Engine, turns: Sequence[ChatTurn]) -> list[int]:
    try:
        return await engine.tokenize_chat(turns)
    except ChatTemplateError as exc:
        raise InvalidRequest(
            f"The model's chat template rejected the messages: {exc}", param="messages"
        ) from exc


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


def check_prompt_bytes(req: InferenceRequest, window: int, longest: int) -> None:
    """A prompt certain to be over the context window is a 400 before admission, untokenized:
    its tokens are at least its bytes / the longest token's bytes; twice that bound, so the
    template's overhead (counted as bytes there) can never make a prompt that fits refused.
    The tokenizer's work on any prompt that passes is bounded by the window, not the body."""
    if longest <= 0:
        return
    most = 2 * window * longest
    for b in req.prompt_bytes:
        if b > most:
            param = "messages" if req.kind == "chat" else "prompt"
            raise ContextLengthExceeded(
                f"This model's maximum context length is {window} tokens; the {param} is "
                f"{b:,} bytes, so certainly more than that. Shorten it.",
                param=param,
            )

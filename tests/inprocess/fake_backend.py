"""A scripted `Backend` (inference/backend.py) for in-process tests: no model, no network.

It answers every choice with `pieces` (one token each), after `begin_delay` seconds of "work"
in `begin` and `delay` seconds per piece; `begin_error` fails `begin`, `fail_after` fails the
events after that many pieces. Its tally counts what it emitted, like the real backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.errors import GenerationFailed
from tokendock.inference.backend import Bound, Delta, Event, Finish, InferenceRequest, Tally

PROMPT_TOKENS = 7


def spec(model: str = "fake-model", price: tuple[str, str] = ("1", "2")) -> ModelSpec:
    return ModelSpec(
        id=model,
        package="fake-model-never-loaded",  # the fake answers instead of an engine
        context_length=4096,
        max_output_tokens=256,
        price=PriceSpec(input=price[0], output=price[1]),
    )


@dataclass
class Script:
    pieces: tuple[str, ...] = ("Hello", ",", " world")
    begin_delay: float = 0.0
    delay: float = 0.0
    begin_error: BaseException | None = None
    fail_after: int | None = None
    error_text: str = "the fake engine broke"
    cached: int = 0  # of the prompt's tokens, those its tally says a KV cache served


@dataclass
class FakeRun:
    req: InferenceRequest
    script: Script
    begun: bool = False
    abandoned: bool = False
    emitted: int = 0
    closed: bool = False
    finishes: list[str] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return PROMPT_TOKENS if self.begun else 0

    async def begin(self) -> None:
        await asyncio.sleep(self.script.begin_delay)
        if self.script.begin_error is not None:
            raise self.script.begin_error
        self.begun = True

    async def events(self) -> AsyncIterator[Event]:
        choices = self.req.n * max(1, len(self.req.prompts))
        try:
            for piece in self.script.pieces:
                for index in range(choices):
                    await asyncio.sleep(self.script.delay)
                    if (
                        self.script.fail_after is not None
                        and self.emitted >= self.script.fail_after
                    ):
                        raise GenerationFailed(self.script.error_text)
                    self.emitted += 1
                    yield Delta(index, piece)
            for index in range(choices):
                self.finishes.append("stop")
                yield Finish(index, "stop")
        finally:
            self.closed = True

    def abandon(self) -> None:
        self.abandoned = True

    async def tally(self) -> Tally:
        return Tally(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.emitted,
            cached_tokens=self.script.cached if self.begun else 0,
            started=self.begun,
            finish=self.finishes[0] if self.finishes else None,
        )


class FakeBackend:
    def __init__(self, model_spec: ModelSpec | None = None, script: Script | None = None):
        self.spec = model_spec or spec()
        self.script = script or Script()
        self.runs: list[FakeRun] = []

    @property
    def ready(self) -> bool:
        return True

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def count(self, req: InferenceRequest) -> int:
        """The fake's count: what its runs bill as prompt tokens."""
        return PROMPT_TOKENS

    def bound(self, req: InferenceRequest) -> Bound:
        choices = req.n * max(1, len(req.prompts))
        return Bound(PROMPT_TOKENS, (req.max_tokens or 16) * choices)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> FakeRun:
        run = FakeRun(req, self.script)
        self.runs.append(run)
        return run

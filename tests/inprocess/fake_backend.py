"""A scripted `Backend` (inference/backend.py) for in-process tests: no model, no network.

It answers every choice with `pieces` (one token each), after `begin_delay` seconds of "work"
in `begin` and `delay` seconds per piece; `begin_error` fails `begin`, `fail_after` fails the
events after that many pieces. Its tally counts what it emitted, like the real backends.

A test that needs a request still running when it acts holds it running instead of racing it:
`Script.hold` is an `asyncio.Event` the run waits on after `hold_after` pieces (the run's
`holding` event says it got there); the test sets it to let the run go on. A request of kind
"embed" gets one `Embedding` per input (`DIMENSIONS` floats), its tokens `PROMPT_TOKENS` each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.errors import GenerationFailed
from tokendock.inference.backend import (
    Bound,
    Delta,
    Embedding,
    Finish,
    InferenceRequest,
    Output,
    Tally,
)

PROMPT_TOKENS = 7
DIMENSIONS = 4


def spec(
    model: str = "fake-model", price: tuple[str, str] = ("1", "2"), task: str = "generation"
) -> ModelSpec:
    return ModelSpec(
        id=model,
        package="fake-model-never-loaded",  # the fake answers instead of an engine
        context_length=4096,
        max_output_tokens=256,
        price=PriceSpec(input=price[0], output=price[1]),
        task=task,  # type: ignore[arg-type]
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
    hold: asyncio.Event | None = None  # set by the test: the run goes on past `hold_after`
    hold_after: int = 0


@dataclass
class FakeRun:
    req: InferenceRequest
    script: Script
    begun: bool = False
    abandoned: bool = False
    emitted: int = 0
    closed: bool = False
    finishes: list[str] = field(default_factory=list)
    holding: asyncio.Event = field(default_factory=asyncio.Event)  # waiting on `script.hold`

    @property
    def prompt_tokens(self) -> int:
        if not self.begun:
            return 0
        return PROMPT_TOKENS * (len(self.req.prompts) if self.req.kind == "embed" else 1)

    async def begin(self) -> None:
        await asyncio.sleep(self.script.begin_delay)
        if self.script.begin_error is not None:
            raise self.script.begin_error
        self.begun = True

    async def wait_if_held(self) -> None:
        hold = self.script.hold
        if hold is not None and self.emitted == self.script.hold_after and not hold.is_set():
            self.holding.set()
            await hold.wait()

    async def events(self) -> AsyncIterator[Output]:
        if self.req.kind == "embed":
            for index in range(len(self.req.prompts)):
                yield Embedding(index, np.full(DIMENSIONS, index + 1, dtype=np.float32))
            self.closed = True
            return
        choices = self.req.n * max(1, len(self.req.prompts))
        try:
            for piece in self.script.pieces:
                for index in range(choices):
                    await self.wait_if_held()
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
        self._made = asyncio.Event()  # set as each run is made

    async def held(self, index: int = 0) -> FakeRun:
        """Run `index` (in the order made), once it waits on its script's `hold`."""
        while len(self.runs) <= index:
            self._made.clear()
            await self._made.wait()
        run = self.runs[index]
        await run.holding.wait()
        return run

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
        if req.kind == "embed":
            return Bound(PROMPT_TOKENS * len(req.prompts), 0)
        choices = req.n * max(1, len(req.prompts))
        return Bound(PROMPT_TOKENS, (req.max_tokens or 16) * choices)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> FakeRun:
        run = FakeRun(req, self.script)
        self.runs.append(run)
        self._made.set()
        return run

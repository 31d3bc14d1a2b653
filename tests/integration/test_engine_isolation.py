"""The embedded engine with the real model, between accounts: the prefix cache is reused and
copied only within one owner; echo + logprobs scores a prompt once per request; the step
watchdog ends a sequence whose token pick is too slow (and only it); cancelling queued jobs
frees the queue at once. Asserts on counts and tokens, never on durations: the watchdog's
clock is injected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.test_scheduler import ENDLESS, GGUF, GREEDY, make, text_of, until
from tokendock.errors import GenerationFailed
from tokendock.inference.engine.base import Generation, PromptScored, PromptScores, TextDelta
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.engine.picker import Picker
from tokendock.inference.engine.scheduler import Scheduler
from tokendock.inference.vocabulary import ChatTurn

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")

SECRET = " ".join(f"Rule {i}: the vault code is {4417 + i}-alpha." for i in range(30))


@pytest.fixture
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[LlamaEngine]:
    eng = make(getattr(request, "param", 4))
    await eng.start()
    yield eng
    await eng.close()


def scheduler(engine: LlamaEngine) -> Scheduler:
    assert engine._scheduler is not None
    return engine._scheduler


async def secret_prompt(engine: LlamaEngine, question: str = "What is the code?") -> list[int]:
    return await engine.tokenize_chat([ChatTurn("system", SECRET), ChatTurn("user", question)])


async def test_another_owners_identical_prompt_reads_nothing_cached(engine: LlamaEngine) -> None:
    prompt = await secret_prompt(engine)
    first = Generation(prompt, 2, sampling=GREEDY, owner="account:victim")
    await text_of(engine, first)
    evaluated = engine.load().prompt_evaluated
    attacker = Generation(list(prompt), 2, sampling=GREEDY, owner="account:attacker")
    await text_of(engine, attacker)
    assert attacker.meter.cached == 0
    assert engine.load().prompt_evaluated - evaluated == len(prompt)  # all of it, evaluated
    again = Generation(list(prompt), 2, sampling=GREEDY, owner="account:victim")
    await text_of(engine, again)
    assert first.meter.cached == 0 and again.meter.cached > len(prompt) - 16  # still its own
    twice = Generation(list(prompt), 2, sampling=GREEDY, owner="account:attacker")
    await text_of(engine, twice)
    assert twice.meter.cached > 0  # the attacker's own cells: a cache per account, not none


async def test_a_busy_slot_is_copied_only_within_its_owner(engine: LlamaEngine) -> None:
    prompt = await secret_prompt(engine, "Tell me a long story.")
    running = Generation(prompt, 400, sampling=ENDLESS, owner="account:victim")
    task = asyncio.ensure_future(text_of(engine, running))
    try:
        await until(lambda: running.meter.tokens > 0)
        other = await secret_prompt(engine, "Say hi.")  # shares the ~300-token system prompt
        theirs = Generation(other, 1, sampling=GREEDY, owner="account:attacker")
        await text_of(engine, theirs)
        mine = Generation(list(other), 1, sampling=GREEDY, owner="account:victim")
        await text_of(engine, mine)
        assert theirs.meter.cached == 0
        assert mine.meter.cached > 300  # copied from the victim's own running slot
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def scored(engine: LlamaEngine, job: Generation) -> tuple[Any, ...]:
    out: tuple[Any, ...] = ()
    async for event in engine.generate(job):
        if isinstance(event, PromptScored):
            out = tuple((t.token, t.logprob, t.top) for t in event.tokens)
    return out


@pytest.mark.parametrize("engine", [4, 1], indirect=True)
async def test_echo_logprobs_score_the_prompt_once_per_request(engine: LlamaEngine) -> None:
    """Four choices of one echo + logprobs prompt: with four slots they follow the scoring
    choice; with one slot, each admitted after it, they reuse its scores. Either way the prompt
    is scored once and every choice echoes the same logprobs."""
    text = " ".join(f"word{i}" for i in range(150))
    prompt = await engine.tokenize(text, chat=False)
    share = PromptScores()
    jobs = [
        Generation(
            prompt,
            2,
            sampling=GREEDY,
            owner="account:a",
            top_logprobs=1,
            prompt_logprobs=True,
            scores=share,
        )
        for _ in range(4)
    ]
    sched = scheduler(engine)
    before, evaluated = sched.prompts_scored, engine.load().prompt_evaluated
    echoed = await asyncio.gather(*(scored(engine, job) for job in jobs))
    assert sched.prompts_scored - before == 1
    assert len(echoed[0]) == len(prompt) - 1  # every token after the BOS
    assert all(e == echoed[0] for e in echoed)
    assert all(job.meter.tokens == 2 for job in jobs)
    # The prompt's evaluation: once, plus at most the last few tokens of each later choice.
    assert engine.load().prompt_evaluated - evaluated <= len(prompt) + 3 * 8
    # Another request (its own share) scores again: scoring is per request, and billed so.
    again = Generation(prompt, 0, owner="account:a", top_logprobs=1, prompt_logprobs=True)
    assert len(await scored(engine, again)) == len(prompt) - 1
    assert sched.prompts_scored - before == 2


class Clock:
    """The watchdog's clock: time passes only when a slow picker says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_the_watchdog_ends_only_the_slow_sequence(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sched, clock = scheduler(engine), Clock()
    monkeypatch.setattr(sched, "clock", clock)
    make_picker = sched._picker

    def picker(job: Any) -> Picker:
        made = make_picker(job)
        if job.gen.owner == "account:slow":
            pick = made.pick

            def slow_pick(logits: Any, row: int = -1) -> int:
                clock.now += 0.5  # as if its grammar had taken half a second
                return pick(logits, row)

            monkeypatch.setattr(made, "pick", slow_pick)
        return made

    monkeypatch.setattr(sched, "_picker", picker)
    prompt = await engine.tokenize_chat([ChatTurn("user", "Tell me a long story.")])
    slow = Generation(prompt, 50, sampling=ENDLESS, owner="account:slow")
    fast = Generation(list(prompt), 20, sampling=ENDLESS, owner="account:fast")

    async def slow_run() -> tuple[str, BaseException | None]:
        got = []
        try:
            async for event in engine.generate(slow):
                if isinstance(event, TextDelta):
                    got.append(event.text)
        except GenerationFailed as exc:
            return "".join(got), exc
        return "".join(got), None

    (text, error), fast_text = await asyncio.gather(slow_run(), text_of(engine, fast))
    assert isinstance(error, GenerationFailed) and error.code == "engine_step_timeout"
    assert error.status == 500 and error.retry_after == float("inf")  # x-should-retry: false
    assert text  # the token it produced was delivered
    await asyncio.wait_for(slow.meter.done.wait(), 30)
    assert slow.meter.tokens == 1  # billed for what it produced
    assert fast.meter.tokens == 20 and fast_text  # the other sequence went on to its end
    assert sched.cut == 1


@pytest.mark.parametrize("engine", [1], indirect=True)
async def test_cancelled_queued_jobs_leave_the_queue_at_once(engine: LlamaEngine) -> None:
    prompt = await engine.tokenize_chat([ChatTurn("user", "Tell me a long story.")])
    holder = Generation(prompt, 300, sampling=ENDLESS, owner="account:a")
    task = asyncio.ensure_future(text_of(engine, holder))
    try:
        await until(lambda: holder.meter.tokens > 0)
        queued = engine.submit(
            [Generation(prompt, 300, sampling=ENDLESS, owner="account:b") for _ in range(3)],
            "account:b",
        )
        assert engine.load().waiting == 3
        for job in queued:
            engine.cancel(job)
        assert engine.load().waiting == 0  # at once, not when the worker gets to them
        assert all(job.gen.meter.done.is_set() and job.gen.meter.tokens == 0 for job in queued)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await until(lambda: engine.load().running == 0)  # the holder's slot is free again

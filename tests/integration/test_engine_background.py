"""Batch lines (`Generation.background`, issue 21) on the embedded engine with the real packaged
model: they are the lowest priority class — an interactive job takes a batch line's slot at
the next step, the line resumes later with the tokens it gets alone; no batch line is admitted
while an interactive job waits and none ever takes an interactive sequence's slot; batch lines
stay outside the interactive wait bounds. Some tests drive the scheduler by hand
(`Scheduler.cycle`, no worker thread) to place each step. Asserts on tokens and counts only."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tokendock.catalog import ModelSpec
from tokendock.errors import ServiceUnavailable
from tokendock.inference.engine.base import Finished, Generation, TextDelta
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.engine.scheduler import Scheduler
from tokendock.inference.vocabulary import ChatTurn, Sampling, TokenLogprob

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"
END, EOS = 106, 1  # <end_of_turn>, <eos> in Gemma 3
ENDLESS = Sampling(temperature=0.0, logit_bias={EOS: -100.0, END: -100.0})
NEAR_TIE = 1.0  # see tests/integration/test_scheduler.py same_up_to_near_ties
BATCH, LIVE = "account:1", "account:2"

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


def make(slots: int = 2, max_queue: int = 4, per_account: int = 2) -> LlamaEngine:
    spec = ModelSpec(
        id="gemma",
        path=GGUF,
        context_length=1024,
        threads=1,
        chat_template="gemma",
        slots=slots,
        max_queue=max_queue,
        max_queue_per_account=per_account,
        deterministic=True,
    )
    return LlamaEngine(spec, ROOT / "data")


@pytest.fixture
async def engine() -> AsyncIterator[LlamaEngine]:
    eng = make()
    await eng.start()
    yield eng
    await eng.close()


@pytest.fixture
async def by_hand() -> AsyncIterator[LlamaEngine]:
    """A loaded engine whose scheduler no thread runs: the test calls `cycle`. (A stand-in
    worker thread that only waits makes the engine ready.)"""
    eng = make()
    await asyncio.to_thread(eng._load)
    idle = threading.Event()
    eng._thread = threading.Thread(target=idle.wait, daemon=True)
    eng._thread.start()
    yield eng
    idle.set()
    await eng.close()


def line(prompt: list[int], n: int, owner: str = BATCH, background: bool = True) -> Generation:
    return Generation(
        prompt, n, sampling=ENDLESS, owner=owner, top_logprobs=2, background=background
    )


async def ask(engine: LlamaEngine, text: str) -> list[int]:
    return await engine.tokenize_chat([ChatTurn("user", text)])


async def tokens_of(engine: LlamaEngine, job: Generation) -> list[TokenLogprob]:
    out: list[TokenLogprob] = []
    async for event in engine.generate(job):
        if isinstance(event, TextDelta):
            out.extend(event.logprobs)
    return out


async def until(condition: Callable[[], bool], seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out")


def same_up_to_near_ties(alone: list[TokenLogprob], got: list[TokenLogprob]) -> None:
    """`got` has `alone`'s tokens, except after a pick between two near-equal tokens: a prompt
    evaluated again in one piece (its slot was taken) has numbers from other kernels than the
    tokens decoded one by one (sequence.py)."""
    for i, (a, b) in enumerate(zip(alone, got, strict=False)):
        if a.raw != b.raw:
            assert a.top[0][1] - a.top[1][1] < NEAR_TIE, (i, a, b)
            return
    assert len(alone) == len(got)


def scheduler(engine: LlamaEngine) -> Scheduler:
    assert engine._scheduler is not None
    return engine._scheduler


async def drive(sched: Scheduler, done: Callable[[], bool], steps: int = 3000) -> None:
    """Run the scheduler by hand until `done` (events reach the loop between cycles)."""
    for _ in range(steps):
        await asyncio.sleep(0)
        if done():
            return
        sched.cycle()
    raise AssertionError("not done")


def finished(job: Job) -> bool:
    return job.gen.meter.done.is_set()


async def events_of(job: Job) -> list[TokenLogprob]:
    out: list[TokenLogprob] = []
    items = await asyncio.wait_for(job.inbox.take(), 5)
    assert isinstance(items[-1][1], Finished)
    for _, item in items:
        if isinstance(item, TextDelta):
            out.extend(item.logprobs)
    return out


async def test_an_interactive_job_takes_a_batch_lines_slot_at_the_next_step(
    engine: LlamaEngine,
) -> None:
    asks = [await ask(engine, f"Tell me a long story about a {w}.") for w in ("cat", "ship")]
    alone = [await tokens_of(engine, line(p, 40)) for p in asks]
    batch = [line(p, 40) for p in asks]
    tasks = [asyncio.ensure_future(tokens_of(engine, job)) for job in batch]
    await until(lambda: all(job.meter.tokens >= 4 for job in batch))
    sched = scheduler(engine)
    preempted, steps = sched.preempted, sched.steps
    live = Generation(await ask(engine, "Count to five."), 4, sampling=ENDLESS, owner=LIVE)
    got = await tokens_of(engine, live)
    took = sched.steps - steps
    assert live.meter.tokens == 4 and got == []  # (no logprobs asked)
    # Admitted at the next step: its one-chunk prompt and 4 tokens took a handful of steps,
    # not the ~36 the batch lines had left.
    assert took <= 10, took
    assert sched.preempted == preempted + 1
    assert not any(task.done() for task in tasks)
    answers = await asyncio.gather(*tasks)
    assert [job.meter.tokens for job in batch] == [40, 40]
    for a, b in zip(alone, answers, strict=True):
        same_up_to_near_ties(a, b)


async def test_no_batch_line_is_admitted_while_an_interactive_job_waits(
    engine: LlamaEngine,
) -> None:
    story = await ask(engine, "Tell me a long story.")
    live = [Generation(story, 40, sampling=ENDLESS, owner=LIVE) for _ in range(3)]
    lines = [line(story, 8, owner=f"account:{9 + i}") for i in range(3)]
    early: list[str] = []

    async def watch() -> None:
        while True:
            if any(j.meter.started for j in lines) and not all(j.meter.started for j in live):
                early.append("a batch line started while an interactive job waited")
            await asyncio.sleep(0.002)

    first = [asyncio.ensure_future(tokens_of(engine, job)) for job in live[:2]]
    await until(lambda: all(job.meter.tokens >= 1 for job in live[:2]))
    # Both slots run interactive jobs; batch lines queue first, then one more interactive job.
    rest = [asyncio.ensure_future(tokens_of(engine, job)) for job in lines]
    await until(lambda: engine.load().background_waiting == 3)
    rest.append(asyncio.ensure_future(tokens_of(engine, live[2])))
    watcher = asyncio.ensure_future(watch())
    await asyncio.gather(*first, *rest)
    watcher.cancel()
    assert early == []
    assert scheduler(engine).preempted == 0  # waiting batch lines never took a slot
    assert [job.meter.tokens for job in live] == [40, 40, 40]
    assert [job.meter.tokens for job in lines] == [8, 8, 8]


async def test_batch_lines_stay_outside_the_interactive_wait_bounds(
    engine: LlamaEngine,
) -> None:
    story = await ask(engine, "Tell me a long story.")
    # The interactive bounds are full: 2 running, 2 waiting (max_queue 4, per account 2).
    live = [Generation(story, 300, sampling=ENDLESS, owner=LIVE) for _ in range(2)]
    queued = engine.submit(live, LIVE)
    await until(lambda: engine.load().running == 2)
    more = [Generation(story, 300, sampling=ENDLESS, owner=LIVE) for _ in range(2)]
    queued += engine.submit(more, LIVE)
    with pytest.raises(ServiceUnavailable):
        engine.check_queue(1, LIVE)
    # 200 batch lines are queued anyway (no 503), and count in no interactive bound.
    lines = engine.submit([line(story, 300) for _ in range(200)], BATCH)
    assert len(lines) == 200
    load = engine.load()
    assert load.background_waiting == 200 and load.waiting == 202
    for job in queued:
        engine.cancel(job)
    await until(lambda: engine.load().waiting == 198 and engine.load().background_running == 2)
    # Batch lines hold both slots and 198 wait: an interactive request is still welcome.
    assert engine.estimated_wait() == 0.0 and not engine.saturated
    engine.check_queue(4, LIVE)
    engine.check_queue(2, BATCH)
    answer = Generation(story, 3, sampling=ENDLESS, owner=BATCH)
    await tokens_of(engine, answer)
    assert answer.meter.tokens == 3
    for job in lines:
        engine.cancel(job)
    await until(lambda: engine.load().running == 0 and len(engine._jobs) == 0)


async def test_a_resumed_line_whose_slot_was_not_taken_evaluates_nothing_again(
    by_hand: LlamaEngine,
) -> None:
    engine = by_hand
    sched = scheduler(engine)
    asks = [await ask(engine, f"Write a poem about the {w}.") for w in ("river", "mountain")]
    alone = []
    for prompt in asks:
        (job,) = engine.submit([line(prompt, 32)], BATCH)
        await drive(sched, functools.partial(finished, job))
        alone.append(await events_of(job))
    jobs = [engine.submit([line(p, 32)], BATCH)[0] for p in asks]  # an inbox each
    await drive(sched, lambda: all(job.gen.meter.tokens >= 10 for job in jobs))
    (live,) = engine.submit([Generation(asks[0], 4, sampling=ENDLESS, owner=LIVE)], LIVE)
    sched._make_room()  # a batch line gives its slot up for the waiting interactive job …
    assert sched.preempted == 1 and len(sched.running) == 1
    (resting,) = [job for job in jobs if all(s.job is not job for s in sched.running)]
    engine.cancel(live)  # … whose client leaves before it is admitted: nobody takes the slot
    evaluated = sched.prompt_evaluated
    sched.cycle()  # the line resumes: every cell it had is still there
    assert len(sched.running) == 2 and sched.prompt_evaluated == evaluated
    await drive(sched, lambda: all(finished(job) for job in jobs))
    assert sched.prompt_evaluated == evaluated  # nothing was evaluated again
    answers = [await events_of(job) for job in jobs]
    assert answers == alone  # exactly the tokens it gets alone
    assert resting.gen.meter.tokens == 32


async def test_another_accounts_job_clears_the_slot_and_the_line_evaluates_its_context(
    by_hand: LlamaEngine,
) -> None:
    engine = by_hand
    sched = scheduler(engine)
    asks = [await ask(engine, f"Write a poem about the {w}.") for w in ("river", "mountain")]
    alone = []
    for prompt in asks:
        (job,) = engine.submit([line(prompt, 32)], BATCH)
        await drive(sched, functools.partial(finished, job))
        alone.append(await events_of(job))
    jobs = [engine.submit([line(p, 32)], BATCH)[0] for p in asks]  # an inbox each
    await drive(sched, lambda: all(job.gen.meter.tokens >= 10 for job in jobs))
    other = await ask(engine, "Count to five.")
    (live,) = engine.submit([Generation(other, 4, sampling=ENDLESS, owner=LIVE)], LIVE)
    sched.cycle()  # room is made, and the interactive job takes the freed slot at once
    assert sched.preempted == 1 and live.gen.meter.started
    (seq,) = [s for s in sched.running if s.job is live]
    # It started from no cells (none of the batch account's) and evaluated its own prompt.
    assert seq.slot.owner == LIVE and live.gen.meter.cached == 0 and seq.slot.cells == other
    (resting,) = [job for job in jobs if all(s.job is not job for s in sched.running)]
    context = len(resting.gen.prompt) + len(resting.sampled)
    evaluated = sched.prompt_evaluated
    await drive(sched, lambda: finished(live))
    await drive(sched, lambda: all(finished(job) for job in jobs))
    # Its whole context was evaluated again (in the slot the interactive job freed: another
    # account's cells, so none kept), and it went on as before, up to near ties.
    assert sched.prompt_evaluated - evaluated == context
    for a, job in zip(alone, jobs, strict=True):
        same_up_to_near_ties(a, await events_of(job))
    assert [job.gen.meter.tokens for job in jobs] == [32, 32]


async def test_batch_lines_can_pause_beside_interactive_streams(by_hand: LlamaEngine) -> None:
    """`Scheduler.batch_rows = 0`: a batch line keeps its slot and its token but decodes
    nothing while an interactive sequence runs, then goes on with the tokens it gets alone."""
    engine = by_hand
    sched = scheduler(engine)
    prompt = await ask(engine, "Write a poem about the river.")
    (job,) = engine.submit([line(prompt, 32)], BATCH)
    await drive(sched, functools.partial(finished, job))
    alone = await events_of(job)
    sched.batch_rows = 0
    (job,) = engine.submit([line(prompt, 32)], BATCH)
    await drive(sched, lambda: job.gen.meter.tokens >= 8)
    made = job.gen.meter.tokens
    other = await ask(engine, "Count to five.")
    (live,) = engine.submit([Generation(other, 6, sampling=ENDLESS, owner=LIVE)], LIVE)
    await drive(sched, functools.partial(finished, live))
    assert live.gen.meter.tokens == 6 and sched.preempted == 0  # a slot was free
    assert job.gen.meter.tokens == made  # paused all along
    await drive(sched, functools.partial(finished, job))
    assert await events_of(job) == alone

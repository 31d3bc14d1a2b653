"""The embedded backend's run without a model: every choice's events come through the run's one
queue (no task per choice, n = 1 included), each choice ends with exactly one Finish, the echoed
prompt comes first, closing the reader cancels every job and the tally still bills what the
engine did; the grammar is built once per request (in `bound`, carried to the jobs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import pytest

import tokendock.inference.engine.embedded as embedded
from tokendock.catalog import ModelSpec
from tokendock.errors import GenerationFailed, ModelNotReady
from tokendock.inference.backend import Delta, Features, Finish, InferenceRequest
from tokendock.inference.engine.base import Finished, Generation, PromptScored, TextDelta
from tokendock.inference.engine.embedded import EmbeddedBackend, EmbeddedRun
from tokendock.inference.engine.inbox import Inbox
from tokendock.inference.engine.job import Job
from tokendock.inference.structured import OutputFormat, answer_grammar
from tokendock.inference.vocabulary import TokenLogprob

PROMPT = [2, 10, 11, 12]


class FakeEngine:
    """What EmbeddedRun uses of the engine; the test plays the worker thread."""

    model_id = "m"
    context_length = 2048
    vocab_size = 1000
    max_token_bytes = 48
    ready = True

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.cancelled: list[Job] = []
        self.grammars_checked = 0

    async def tokenize(self, text: str, *, chat: bool) -> list[int]:
        return list(PROMPT)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return "".join(f"<{t}>" for t in tokens)

    def check_grammar(self, text: str) -> bool:
        self.grammars_checked += 1
        return True

    def submit(self, gens: Sequence[Generation], owner: str, inbox: Inbox) -> list[Job]:
        self.jobs = [Job(gen, inbox, i) for i, gen in enumerate(gens)]
        return list(self.jobs)

    def cancel(self, job: Job) -> None:
        self.cancelled.append(job)
        job.cancel()


def backend() -> tuple[EmbeddedBackend, FakeEngine]:
    engine = FakeEngine()
    spec = ModelSpec(id="m", path=Path("/m.gguf"), slots=8, max_queue=64)
    return EmbeddedBackend(engine, spec), engine  # type: ignore[arg-type]


def request(n: int = 1, **fields: Any) -> InferenceRequest:
    return InferenceRequest(
        "text", "m", prompts=("hello",), prompt_bytes=(5,), n=n, max_tokens=16, **fields
    )


async def started(req: InferenceRequest) -> tuple[EmbeddedRun, FakeEngine]:
    back, engine = backend()
    run = back.run(req, owner="account:1", request_id="req_1", bound=back.bound(req))
    await run.begin()
    return run, engine


def work(jobs: list[Job], tokens: int, *, until_cancelled: bool = False) -> threading.Thread:
    """A worker thread like the scheduler's: each step one token per running job (interleaved
    across choices), then one Finished each; a cancelled job stops within a step."""

    def steps() -> None:
        for job in jobs:
            assert job.start()
        step = 0
        while step < tokens or until_cancelled:
            live = [job for job in jobs if not job.cancelled.is_set()]
            if not live:
                break
            for job in live:
                job.gen.meter.tokens += 1
                job.emit(TextDelta(f"c{job.choice}t{step} "))
            step += 1
            time.sleep(0.001)
        for job in jobs:
            if not job.cancelled.is_set():
                job.emit(Finished("length", job.gen.meter.tokens))
            job.finish_meter()

    thread = threading.Thread(target=steps)
    thread.start()
    return thread


@pytest.mark.parametrize("n", [1, 3])
async def test_every_choice_comes_through_one_queue_and_finishes_once(n: int) -> None:
    run, engine = await started(request(n))
    tasks_before = len(asyncio.all_tasks())
    thread = work(engine.jobs, 5)
    texts: dict[int, str] = {i: "" for i in range(n)}
    finishes: dict[int, int] = {i: 0 for i in range(n)}
    async for event in run.events():
        assert len(asyncio.all_tasks()) == tasks_before  # no pump task per choice
        if isinstance(event, Finish):
            finishes[event.index] += 1
        else:
            assert finishes[event.index] == 0  # nothing of a choice after its Finish
            texts[event.index] += event.text
    thread.join()
    assert finishes == {i: 1 for i in range(n)}
    assert texts == {i: "".join(f"c{i}t{s} " for s in range(5)) for i in range(n)}
    tally = await run.tally()
    assert tally.completion_tokens == 5 * n and tally.prompt_tokens == len(PROMPT)
    assert tally.started and tally.finish == "length" and tally.first_token is not None


async def test_closing_the_reader_cancels_every_choice_and_bills_what_was_made() -> None:
    run, engine = await started(request(4))
    thread = work(engine.jobs, 0, until_cancelled=True)
    events = run.events()
    assert isinstance(events, AsyncGenerator)
    seen = 0
    async for event in events:
        assert isinstance(event, Delta)
        seen += 1
        if seen == 3:
            break
    await events.aclose()  # the client left
    assert {id(job) for job in engine.cancelled} == {id(job) for job in engine.jobs}
    assert all(job.cancelled.is_set() for job in engine.jobs)
    tally = await asyncio.wait_for(run.tally(), 5)  # waits for the worker to stop them
    thread.join()
    made = sum(job.gen.meter.tokens for job in engine.jobs)
    assert made >= 1 and tally.completion_tokens == made  # billed: what the engine did
    assert tally.started and tally.prompt_tokens == len(PROMPT)


async def test_the_scored_prompt_comes_first_for_each_choice() -> None:
    req = request(2, echo=True, features=Features(logprobs=True, top_logprobs=0))
    run, engine = await started(req)
    assert all(job.gen.prompt_logprobs for job in engine.jobs)
    scored = (TokenLogprob("<10>", -0.5, b"<10>"), TokenLogprob("<11>", -0.25, b"<11>"))

    def worker() -> None:
        for job in engine.jobs:
            job.start()
            job.emit(PromptScored(scored))
        for job in engine.jobs:
            job.gen.meter.tokens = 1
            job.emit(TextDelta("x", (TokenLogprob("x", -1.0, b"x"),)))
            job.emit(Finished("length", 1))
            job.finish_meter()

    thread = threading.Thread(target=worker)
    thread.start()
    first: dict[int, str] = {}
    async for event in run.events():
        if isinstance(event, Delta):
            first.setdefault(event.index, event.text)
    thread.join()
    assert first == {0: "hello", 1: "hello"}  # the echoed prompt, before any token
    assert (await run.tally()).completion_tokens == 2


async def test_an_engine_error_reaches_the_reader() -> None:
    for error, expected in (
        (RuntimeError("boom"), GenerationFailed),
        (ModelNotReady("shutting down"), ModelNotReady),
    ):
        run, engine = await started(request(2))
        job = engine.jobs[1]
        job.start()
        job.emit(error)
        job.finish_meter()
        engine.jobs[0].cancel()  # never started: done, nothing to bill
        with pytest.raises(expected):
            async for _ in run.events():
                pass
        assert all(j.cancelled.is_set() for j in engine.jobs)
        await asyncio.wait_for(run.tally(), 5)


async def test_the_inbox_batches_and_wakes_its_reader_from_another_thread() -> None:
    inbox = Inbox(asyncio.get_running_loop())
    assert inbox.put(0, TextDelta("a")) and inbox.put(1, TextDelta("b"))
    assert await inbox.take() == [(0, TextDelta("a")), (1, TextDelta("b"))]  # one batch
    reader = asyncio.create_task(inbox.take())
    await asyncio.sleep(0)  # the reader waits now
    threading.Thread(target=inbox.put, args=(2, Finished("stop", 0))).start()
    assert await asyncio.wait_for(reader, 5) == [(2, Finished("stop", 0))]


def test_put_after_the_loop_closed_says_nobody_listens() -> None:
    loop = asyncio.new_event_loop()
    inbox = Inbox(loop)
    loop.close()
    job = Job(Generation([1], 1), inbox)
    job.emit(TextDelta("late"))
    assert not inbox.put(0, TextDelta("late")) and job.cancelled.is_set()


async def test_the_grammar_is_built_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    built = 0
    real = answer_grammar

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal built
        built += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "answer_grammar", counting)
    back, engine = backend()
    req = request(3, output=OutputFormat("json_object"))
    bound = back.bound(req)
    assert bound.grammar is not None and built == 1 and engine.grammars_checked == 1
    run = back.run(req, owner="account:1", request_id="req_1", bound=bound)
    await run.begin()
    assert built == 1 and engine.grammars_checked == 1  # begin builds nothing again
    assert all(job.gen.grammar is bound.grammar for job in engine.jobs)
    unbound = back.run(req, owner="account:1", request_id="req_2")  # no bound: built once
    await unbound.begin()
    assert built == 2 and len({id(job.gen.grammar) for job in engine.jobs}) == 1

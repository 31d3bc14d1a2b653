"""The engine's worker with a fake model: round robin between owners, time slices that resume
where they stopped, and cancelled jobs skipped or settled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from tokendock.catalog import ModelSpec
from tokendock.inference.base import Finished, Generation, TextDelta
from tokendock.inference.llama import SLICE_TOKENS, LlamaEngine


class FakeModel:
    """Stands in for the llama.cpp context: every token is "x"; evaluating a context (a job's
    prompt, or prompt + tokens so far when it resumes) waits for `go`."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.contexts: list[int] = []  # tokens of each context evaluated

    def evaluate(self, tokens: Sequence[int]) -> None:
        self.contexts.append(len(tokens))
        self.go.wait(10)

    def close(self) -> None:
        pass


class FakePicker:
    def pick(self, logits: object) -> int:
        return 7

    def accept(self, token: int) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[LlamaEngine, FakeModel]]:
    eng = LlamaEngine(ModelSpec(id="fake", path=tmp_path / "x.gguf", context_length=4096), tmp_path)
    model = FakeModel()
    eng._llm = model
    eng._llama_cpp = SimpleNamespace(llama_vocab_is_eog=lambda vocab, token: False)
    eng._piece = lambda token: b"x"  # type: ignore[method-assign]
    eng._picker = lambda job: FakePicker()  # type: ignore[assignment,method-assign,return-value]
    eng._evaluate = model.evaluate  # type: ignore[method-assign]
    eng._logits = lambda: None  # type: ignore[method-assign]
    eng._advance = lambda token: None  # type: ignore[method-assign]
    eng._thread = threading.Thread(target=eng._worker, daemon=True)
    eng._thread.start()
    yield eng, model
    model.go.set()
    await eng.close()


async def consume(eng: LlamaEngine, job: Generation, log: list[str], name: str) -> str:
    text = ""
    async for event in eng.generate(job):
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, Finished):
            log.append(name)
    return text


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("timed out")


async def started(job: Generation) -> None:
    await until(lambda: job.meter.started)


PROMPT = [2, 3, 4, 5]


async def test_a_late_owner_is_served_after_one_slice(
    engine: tuple[LlamaEngine, FakeModel],
) -> None:
    eng, model = engine
    log: list[str] = []
    big = [Generation(PROMPT, 100, owner="a") for _ in range(3)]
    tasks = [asyncio.ensure_future(consume(eng, j, log, f"a{i}")) for i, j in enumerate(big)]
    await started(big[0])
    small = Generation(PROMPT[:2], 1, owner="b")
    tasks.append(asyncio.ensure_future(consume(eng, small, log, "b")))
    await asyncio.sleep(0.05)  # b is queued while a0 holds the worker
    model.go.set()
    texts = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    # The model's calls, in order (b's prompt has 2 tokens, a's 4): a0 ran one slice, b ran,
    # a0 resumed from its prompt + its first slice, then a1 and a2 ran whole.
    assert model.contexts == [4, 2, 4 + SLICE_TOKENS, 4, 4]
    assert texts == ["x" * 100] * 3 + ["x"]  # the sliced job lost and repeated nothing
    assert big[0].meter.tokens == 100
    assert sorted(log) == ["a0", "a1", "a2", "b"]


async def test_one_owner_alone_is_never_sliced(engine: tuple[LlamaEngine, FakeModel]) -> None:
    eng, model = engine
    model.go.set()
    log: list[str] = []
    jobs = [Generation(PROMPT, 200, owner="a") for _ in range(2)]
    await asyncio.gather(*(consume(eng, j, log, f"a{i}") for i, j in enumerate(jobs)))
    assert log == ["a0", "a1"]
    assert model.contexts == [4, 4]


async def test_a_job_abandoned_while_queued_is_skipped(
    engine: tuple[LlamaEngine, FakeModel],
) -> None:
    eng, model = engine
    first = Generation(PROMPT, 5, owner="a")
    running = asyncio.ensure_future(consume(eng, first, [], "a0"))
    await started(first)
    queued = Generation(PROMPT, 5, owner="b")
    abandoned = asyncio.ensure_future(consume(eng, queued, [], "b0"))
    await asyncio.sleep(0.02)
    abandoned.cancel()
    await asyncio.wait_for(queued.meter.done.wait(), 5)  # done at once: nothing to bill
    model.go.set()
    await asyncio.wait_for(running, 5)
    assert not queued.meter.started and model.contexts == [4]


async def test_a_job_abandoned_between_slices_is_settled(
    engine: tuple[LlamaEngine, FakeModel],
) -> None:
    eng, model = engine
    log: list[str] = []
    long = Generation(PROMPT, 1000, owner="a")
    reader = asyncio.ensure_future(consume(eng, long, log, "a0"))
    await started(long)
    other = [Generation(PROMPT, 1000, owner="b")]
    b_task = asyncio.ensure_future(consume(eng, other[0], log, "b0"))
    await asyncio.sleep(0.02)
    model.go.set()
    await until(lambda: other[0].meter.tokens > 0)  # a0 yielded its slice to b0
    reader.cancel()
    await asyncio.wait_for(long.meter.done.wait(), 10)
    assert long.meter.tokens >= SLICE_TOKENS  # billed for the slice it ran
    b_task.cancel()

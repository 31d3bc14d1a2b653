"""The engine keeps its speed burst after burst (issue 20): what a step costs depends on the
batch it decodes, and after a burst that batch is what a fresh engine's would be.

llama.cpp decodes a batch over per-sequence KV cells in one forward pass per run of consecutive
sequence ids (in batch order). The scheduler puts rows in sequence-id order and chooses slots
that keep running sequences together, so a worn engine decodes each step in one pass, like a
fresh one; and every slot's KV cells hold exactly the positions its bookkeeping says. Asserts
on batches, sequence ids and KV positions, never on time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tokendock.catalog import ModelSpec
from tokendock.inference.engine.base import Generation, TextDelta
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.engine.scheduler import Scheduler
from tokendock.inference.vocabulary import Sampling

ROOT = Path(__file__).resolve().parents[2]
GGUF = ROOT / "data" / "models" / "gemma-3-270m-q4_k_m.gguf"
GREEDY = Sampling(temperature=0.0, logit_bias={1: -100.0, 106: -100.0})  # never an end token

pytestmark = pytest.mark.skipif(not GGUF.exists(), reason="run `tokendock models fetch` first")


def runs(ids: list[int]) -> int:
    """Runs of consecutive ids in batch order: llama.cpp's forward passes for the step."""
    passes, last = 0, None
    for i in ids:
        if i != last and (last is None or i != last + 1):
            passes += 1
        last = i
    return passes


class Recorder:
    """The sequence id of every row of every step the scheduler decodes."""

    def __init__(self, scheduler: Scheduler):
        self.steps: list[list[int]] = []
        batch = scheduler._batch
        ready = batch.ready

        def record() -> Any:
            self.steps.append([int(s) for s in batch.seq[: batch.size]])
            return ready()

        batch.ready = record  # type: ignore[method-assign]


@pytest.fixture
async def engines() -> AsyncIterator[tuple[LlamaEngine, LlamaEngine]]:
    made = []
    for _ in range(2):
        spec = ModelSpec(
            id="gemma", path=GGUF, context_length=512, threads=1, chat_template="gemma", slots=8
        )
        eng = LlamaEngine(spec, ROOT / "data")
        await eng.start()
        made.append(eng)
    yield made[0], made[1]
    for eng in made:
        await eng.close()


async def generate(engine: LlamaEngine, prompt: list[int], tokens: int, owner: str) -> None:
    async for _ in engine.generate(Generation(prompt, tokens, sampling=GREEDY, owner=owner)):
        pass


async def burst(engine: LlamaEngine, words: list[str], tokens: int, owner: str = "a") -> None:
    prompts = [await engine.tokenize(f"A story about a {w}:", chat=False) for w in words]
    await asyncio.gather(*(generate(engine, p, tokens, owner) for p in prompts))


def kv_positions(engine: LlamaEngine) -> list[tuple[int, int, int]]:
    """(first position, last position, cells the scheduler thinks it has) per slot."""
    sched = engine._scheduler
    assert sched is not None
    c, mem = sched._m.c, sched._m.memory
    return [
        (
            c.llama_memory_seq_pos_min(mem, s.seq),
            c.llama_memory_seq_pos_max(mem, s.seq),
            len(s.cells),
        )
        for s in sched.slots
    ]


def consistent(positions: list[tuple[int, int, int]]) -> bool:
    """Every slot holds positions 0…cells-1 exactly (or nothing)."""
    return all((lo, hi) == ((0, n - 1) if n else (-1, -1)) for lo, hi, n in positions)


async def test_after_bursts_each_step_is_one_pass_as_in_a_fresh_engine(
    engines: tuple[LlamaEngine, LlamaEngine],
) -> None:
    worn, fresh = engines
    # Wear one engine: every slot used by two owners, sequences ending at different steps,
    # then one request alone — slots end up free in a scattered order.
    words = ["cat", "dog", "ship", "tree", "king", "robot", "river", "bird"]
    await asyncio.gather(
        burst(worn, words[:4], 12, "a"), burst(worn, words[4:], 20, "b"), burst(worn, ["x"], 5)
    )
    await burst(worn, ["lamp"], 6, "c")
    await burst(worn, ["moon", "star", "sun"], 9, "b")
    assert consistent(kv_positions(worn))

    steps: dict[str, list[list[int]]] = {}
    for name, eng in (("worn", worn), ("fresh", fresh)):
        assert eng._scheduler is not None
        recorder = Recorder(eng._scheduler)
        await burst(eng, ["apple", "pear", "plum", "fig", "lime"], 10, "d")
        steps[name] = recorder.steps
        assert consistent(kv_positions(eng))
    for name, recorded in steps.items():
        assert recorded, name
        for ids in recorded:
            assert ids == sorted(ids), (name, ids)  # rows in sequence-id order
            assert runs(ids) == 1, (name, sorted(set(ids)), recorded[:3])  # one pass a step
    # The same work: as many steps, each with as many rows, as the fresh engine.
    assert [len(ids) for ids in steps["worn"]] == [len(ids) for ids in steps["fresh"]]


async def tokens_of(engine: LlamaEngine, prompt: list[int], tokens: int) -> tuple[list[str], int]:
    """(the answer's pieces, prompt tokens reused from the cache)."""
    job = Generation(prompt, tokens, sampling=GREEDY, owner="a")
    out: list[str] = []
    async for event in engine.generate(job):
        out.extend([event.text] if isinstance(event, TextDelta) else [])
    return out, job.meter.cached


async def test_a_prefix_whose_window_cells_are_gone_is_evaluated_again() -> None:
    """Sliding-window layers keep only a window (+ a batch) of each sequence's latest cells.
    A prompt sharing the first 100 tokens of a 1,500-token one cached in the slot cannot reuse
    them (their window cells were overwritten): it is evaluated whole, and its answer is the
    one a fresh engine gives."""
    made = []
    for _ in range(2):
        spec = ModelSpec(
            id="gemma",
            path=GGUF,
            context_length=2048,
            threads=1,
            chat_template="gemma",
            slots=1,
            deterministic=True,
        )
        eng = LlamaEngine(spec, ROOT / "data")
        await eng.start()
        made.append(eng)
    used, fresh = made
    try:
        text = " ".join(f"item{i}" for i in range(1000))
        long = await used.tokenize(text, chat=False)
        assert len(long) > 1500
        await tokens_of(used, long[:1500], 1)
        short = [*long[:100], *await used.tokenize(" The end.", chat=False)]
        again, cached = await tokens_of(used, short, 8)
        assert cached == 0  # nothing reused: the window before position 100 is gone
        alone, _ = await tokens_of(fresh, short, 8)
        assert again == alone
        assert consistent(kv_positions(used))
        # A prefix within the window is reused as before.
        _, reused = await tokens_of(used, [*short, *short[1:20]], 4)
        assert reused > 100
    finally:
        for eng in made:
            await eng.close()

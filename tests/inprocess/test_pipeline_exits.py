"""Exactly-once settlement on every exit path of the pipeline (services/pipeline.py, gate.py),
table-driven, in-process: the real gate, ledger (SQLite) and limiter around a scripted backend.

For each way a request can end, the ledger's settle runs exactly once, no hold stays open, the
ledger verifies, and the balance moved by exactly what the usage record says was charged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from tests.inprocess.conftest import GRANT, World
from tests.inprocess.fake_backend import PROMPT_TOKENS, Script
from tokendock.errors import (
    ContextLengthExceeded,
    GenerationFailed,
    InsufficientCredit,
    TokenDockError,
)
from tokendock.inference.backend import Bound, InferenceRequest
from tokendock.inference.vocabulary import ChatTurn
from tokendock.services.pipeline import Call

MODEL = "fake-model"


def request(stream: bool = True) -> InferenceRequest:
    return InferenceRequest(
        kind="chat", model=MODEL, turns=(ChatTurn("user", "hi"),), max_tokens=8, stream=stream
    )


async def read_all(call: Call) -> None:
    await call.begin()
    async for _ in call.events():
        pass


async def begin_fails(call: Call) -> None:
    with pytest.raises(TokenDockError):
        await call.begin()


async def cancelled_in_begin(call: Call) -> None:
    task = asyncio.ensure_future(call.begin())
    await asyncio.sleep(0.05)  # inside the backend's begin
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def events_fail(call: Call) -> None:
    await call.begin()
    with pytest.raises(GenerationFailed):
        async for _ in call.events():
            pass


async def closed_after_one(call: Call) -> None:
    """A stream's client went away after the first event: the response closes the events."""
    await call.begin()
    events = call.events()
    await events.__anext__()
    await events.aclose()  # type: ignore[attr-defined]
    await call.abandon()  # the response's on_close runs after that: a no-op now


async def abandoned_before_reading(call: Call) -> None:
    await call.begin()
    await call.abandon()
    await call.abandon()  # twice: still one settlement


async def collect_cancelled(call: Call) -> None:
    """A non-streamed request cut mid-generation (client gone, or the shutdown deadline)."""
    await call.begin()
    task = asyncio.ensure_future(call.collect())
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def collected(call: Call) -> None:
    await call.begin()
    answer = await call.collect()
    assert [c.text for c in answer.choices] == ["Hello, world"]
    await call.abandon()  # the response ended: no second settlement


@dataclass(frozen=True)
class Exit:
    name: str
    script: Script
    drive: Callable[[Call], Awaitable[None]]
    status: str
    completion: int | None  # tokens billed; None: released (no usage record)
    prompt_billed: bool = True


SLOW = Script(delay=0.02)
EXITS = [
    Exit("all events read", Script(), read_all, "ok", 3),
    Exit("whole answer collected", Script(), collected, "ok", 3),
    Exit(
        "client error in begin (context window)",
        Script(begin_error=ContextLengthExceeded("too long", param="messages")),
        begin_fails,
        "error",
        None,
    ),
    Exit(
        "server error in begin",
        Script(begin_error=GenerationFailed("broke")),
        begin_fails,
        "error",
        0,
        prompt_billed=False,
    ),
    Exit(
        "client gone during begin",
        Script(begin_delay=1),
        cancelled_in_begin,
        "client_disconnected",
        None,
    ),
    Exit("backend fails mid-answer", Script(fail_after=2), events_fail, "error", 2),
    Exit("stream closed after one event", SLOW, closed_after_one, "client_disconnected", 1),
    Exit("abandoned before reading", Script(), abandoned_before_reading, "client_disconnected", 0),
    Exit("non-stream cancelled mid-answer", SLOW, collect_cancelled, "client_disconnected", 2),
]


@pytest.mark.parametrize("exit_", EXITS, ids=[e.name for e in EXITS])
async def test_settled_exactly_once(world: World, exit_: Exit) -> None:
    world.backend.script = exit_.script
    call = await world.pipeline.start(world.key, request(), "req_exit")
    assert isinstance(call, Call)
    await exit_.drive(call)
    await world.gate.drain()

    assert len(world.settles) == 1, exit_.name
    assert await world.ledger.open_holds() == 0
    assert await world.ledger.verify() == []
    ticket = call.ticket
    assert ticket.status == exit_.status
    if exit_.completion is None:  # released: nothing charged, no usage record
        assert ticket.usage is None and ticket.settlement is None
        assert await world.balance() == GRANT
        return
    assert ticket.usage is not None and ticket.settlement is not None
    prompt = PROMPT_TOKENS if exit_.prompt_billed else 0
    # collect_cancelled's count depends on timing: at least one piece, at most all
    completion = ticket.usage.completion_tokens
    if exit_.drive is collect_cancelled:
        assert 1 <= completion <= 3
    else:
        assert completion == exit_.completion
    assert ticket.usage.prompt_tokens == prompt
    charged = world.gate.price(MODEL).cost(prompt, completion)
    assert ticket.settlement.charged == charged
    assert await world.balance() == GRANT - charged


async def test_refused_at_admission_holds_nothing(world: World) -> None:
    """402 before any hold: nothing to settle, nothing open."""
    big = InferenceRequest(
        kind="chat", model=MODEL, turns=(ChatTurn("user", "hi"),), max_tokens=10**6
    )
    world.backend.bound = lambda req: Bound(10**9, 10**9)  # type: ignore[method-assign]
    with pytest.raises(InsufficientCredit):
        await world.pipeline.start(world.key, big, "req_402")
    assert world.settles == [] and await world.ledger.open_holds() == 0
    assert world.backend.runs == []


async def test_concurrent_calls_each_settle_once(world: World) -> None:
    world.backend.script = Script(delay=0.001)

    async def one(i: int) -> None:
        call = await world.pipeline.start(world.key, request(), f"req_{i}")
        assert isinstance(call, Call)
        await read_all(call)

    await asyncio.gather(*(one(i) for i in range(20)))
    await world.gate.drain()
    assert len(world.settles) == 20
    assert await world.ledger.open_holds() == 0
    assert await world.ledger.verify() == []
    assert await world.balance() == GRANT - 20 * world.gate.price(MODEL).cost(PROMPT_TOKENS, 3)


async def test_backend_refusing_to_make_a_run_releases_the_hold(world: World) -> None:
    """`backend.run()` raising after admission: the hold is released, once; nothing billed."""

    def broken(req: InferenceRequest, *, owner: str, request_id: str, bound: object) -> None:
        raise GenerationFailed("no run")

    world.backend.run = broken  # type: ignore[assignment, method-assign]
    with pytest.raises(GenerationFailed):
        await world.pipeline.start(world.key, request(), "req_norun")
    await world.gate.drain()
    assert len(world.settles) == 1
    assert await world.ledger.open_holds() == 0
    assert await world.balance() == GRANT

"""Batch lines on upstream deployments (issue 21): at most a deployment's `batch_seats` of its
`max_concurrency` per process, waiting (cancellable) for a seat instead of failing; interactive
requests never wait for batch seats; a batch line never spills over from the engine. Fake
deployments (no HTTP), real routers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokendock.catalog import DeploymentSpec, ModelSpec
from tokendock.errors import ServiceUnavailable
from tokendock.inference.backend import InferenceRequest, Passthrough
from tokendock.inference.engine.embedded import EmbeddedBackend, EmbeddedRun
from tokendock.inference.spill import SpillBackend
from tokendock.inference.upstream.backend import UpstreamBackend, UpstreamRun
from tokendock.inference.upstream.client import Answer, Deployment, UpstreamFailure
from tokendock.inference.upstream.router import RetryPolicy, Router, batch_seats
from tokendock.inference.upstream.transport import UpstreamTransport
from tokendock.inference.vocabulary import ChatTurn

POLICY = RetryPolicy(retries=2, deadline=0.05, backoff=0.001, allowed_fails=2, cooldown=30)


class Fake(Deployment):
    """Answers from a script: an exception to raise or a body to return, one per call."""

    script: list[Any]

    def __init__(self, name: str, script: list[Any] | None = None, **spec: Any):
        super().__init__(DeploymentSpec(name=name, base_url="http://127.0.0.1:1/v1", **spec))
        self.script = script or []

    async def open(self, session: Any, path: str, body: bytes, **_: Any) -> Answer:
        step = self.script.pop(0) if self.script else {"ok": self.name}
        if isinstance(step, BaseException):
            raise step
        return Answer(self, body=step)


def router(*deployments: Deployment, policy: RetryPolicy = POLICY) -> Router:
    return Router("m", deployments, policy, UpstreamTransport(object()))  # type: ignore[arg-type]


async def send(r: Router, *, background: bool) -> Answer:
    return await r.open(
        "/chat/completions", {}, stream=False, request_id="x", background=background
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("cap", "share", "seats"),
    [(10, 0.5, 5), (7, 0.5, 3), (3, 0.25, 1), (1, 0.5, 1), (8, 1.0, 8), (0, 0.5, None)],
)
def test_batch_seats_are_the_share_rounded_down_at_least_one(
    cap: int, share: float, seats: int | None
) -> None:
    assert batch_seats(Fake("a", max_concurrency=cap, batch_share=share)) == seats


async def test_a_batch_line_past_the_share_waits_while_interactive_requests_go_through() -> None:
    a = Fake("a", max_concurrency=4, batch_share=0.5)
    r = router(a)
    held = [await send(r, background=True) for _ in range(2)]
    assert (a.health.outstanding, a.health.batch) == (2, 2)
    third = asyncio.ensure_future(send(r, background=True))
    await asyncio.sleep(0.1)  # twice the retry deadline: it waits, it does not fail
    assert not third.done()
    live = [await send(r, background=False) for _ in range(2)]  # the rest of the concurrency
    assert (a.health.outstanding, a.health.batch) == (4, 2)
    r.finish(held[0])
    answer = await asyncio.wait_for(third, 1)
    assert answer.background and (a.health.outstanding, a.health.batch) == (4, 2)
    for done in (held[1], answer, *live):
        r.finish(done)
    assert (a.health.outstanding, a.health.batch) == (0, 0)


async def test_interactive_requests_are_refused_at_the_cap_but_batch_lines_wait() -> None:
    a = Fake("a", max_concurrency=2, batch_share=0.5)
    r = router(a)
    live = [await send(r, background=False) for _ in range(2)]
    with pytest.raises(ServiceUnavailable):
        await send(r, background=False)  # the interactive rule is unchanged
    line = asyncio.ensure_future(send(r, background=True))
    await asyncio.sleep(0.1)
    assert not line.done()  # full with interactive requests: the line waits for a slot
    r.finish(live[0])
    answer = await asyncio.wait_for(line, 1)
    assert a.health.batch == 1
    r.finish(answer)
    r.finish(live[1])


async def test_a_waiting_batch_line_can_be_cancelled() -> None:
    a = Fake("a", max_concurrency=2, batch_share=0.5)
    r = router(a)
    held = await send(r, background=True)
    line = asyncio.ensure_future(send(r, background=True))
    await settle()
    line.cancel()
    with pytest.raises(asyncio.CancelledError):
        await line
    assert (a.health.outstanding, a.health.batch, r._waiting) == (1, 1, 0)
    r.finish(held)
    assert (a.health.outstanding, a.health.batch) == (0, 0)


async def test_batch_lines_spread_over_deployments_with_seats() -> None:
    a = Fake("a", max_concurrency=2, batch_share=0.5)
    b = Fake("b", max_concurrency=4, batch_share=0.5)
    r = router(a, b)
    held = [await send(r, background=True) for _ in range(3)]  # 1 seat on a, 2 on b
    assert (a.health.batch, b.health.batch) == (1, 2)
    line = asyncio.ensure_future(send(r, background=True))
    await asyncio.sleep(0.05)
    assert not line.done()
    r.finish(held[0])
    r.finish(await asyncio.wait_for(line, 1))
    for answer in held[1:]:
        r.finish(answer)
    assert (a.health.batch, b.health.batch, a.health.outstanding, b.health.outstanding) == (
        0,
        0,
        0,
        0,
    )


async def test_without_max_concurrency_batch_lines_have_no_cap() -> None:
    a = Fake("a")
    r = router(a)
    held = await asyncio.gather(*(send(r, background=True) for _ in range(20)))
    assert a.health.batch == 20
    for answer in held:
        r.finish(answer)
    assert a.health.batch == 0


async def test_a_failed_try_gives_the_batch_seat_back() -> None:
    a = Fake("a", [UpstreamFailure("a: 502", retryable=True)], max_concurrency=2)
    r = router(a)
    answer = await send(r, background=True)  # the second try, after the first failed
    assert a.script == [] and (a.health.outstanding, a.health.batch) == (1, 1)
    r.finish(answer)
    assert (a.health.outstanding, a.health.batch) == (0, 0)


def test_a_batch_line_never_spills_over_from_the_engine() -> None:
    deployment = Fake("big")
    spec = ModelSpec(id="m", package="p", spill_after=0, deployments=[deployment.spec])

    class Busy:  # the engine's load as spill-over reads it: every slot taken
        ready = saturated = True
        context_length, vocab_size, max_token_bytes = 2048, 1000, 48

        def estimated_wait(self) -> float:
            return 9.0

    engine = Busy()
    local = EmbeddedBackend(engine, spec)  # type: ignore[arg-type]
    backend = SpillBackend(local, UpstreamBackend(router(deployment), spec), engine)
    body = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'

    def run(background: bool) -> object:
        req = InferenceRequest(
            "chat",
            "m",
            (ChatTurn("user", "hi"),),
            prompt_bytes=(12,),
            payload=Passthrough(body),
            background=background,
        )
        return backend.run(req, owner="account:1", request_id="req_1")

    assert isinstance(run(False), UpstreamRun)  # an interactive request spills
    assert isinstance(run(True), EmbeddedRun)  # a batch line waits for the engine
    assert backend.spilled == 1

"""Router rules with fake deployments: balancing, capacity, cool-downs, retries, give-up errors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from tokendock.catalog import DeploymentSpec
from tokendock.errors import (
    NoHealthyDeployment,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
)
from tokendock.inference.upstream.client import Answer, ClientFault, Deployment, UpstreamFailure
from tokendock.inference.upstream.router import RetryPolicy, Router, _pick
from tokendock.inference.upstream.transport import UpstreamTransport
from tokendock.web.headers import of_error

POLICY = RetryPolicy(retries=2, deadline=5, backoff=0.001, allowed_fails=2, cooldown=30)


class Fake(Deployment):
    """Answers from a script: an exception to raise or a body to return, one per call."""

    script: list[Any]
    calls: int

    def __init__(self, name: str, script: list[Any] | None = None, **spec: Any):
        super().__init__(DeploymentSpec(name=name, base_url="http://127.0.0.1:1/v1", **spec))
        self.script = script or []
        self.calls = 0

    async def open(self, session: Any, path: str, body: bytes, **_: Any) -> Answer:
        self.calls += 1
        step = self.script.pop(0) if self.script else {"ok": self.name}
        if isinstance(step, BaseException):
            raise step
        return Answer(self, body=step)


def router(*deployments: Deployment, policy: RetryPolicy = POLICY) -> Router:
    return Router("m", deployments, policy, UpstreamTransport(object()))  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_pick_prefers_fewer_in_flight_per_weight() -> None:
    a, b = Fake("a"), Fake("b")
    a.health.outstanding = 5
    assert all(_pick([a, b]) is b for _ in range(50))
    heavy, light = Fake("heavy", weight=4.0), Fake("light", weight=1.0)
    heavy.health.outstanding = 3  # (3+1)/4 = 1.0 vs (0+1)/1 = 1.0: a tie keeps the first sampled
    wins = Counter(_pick([heavy, light]).name for _ in range(2000))
    assert wins["heavy"] > wins["light"]  # the heavier is sampled first more often


def test_weights_share_traffic_when_idle() -> None:
    a, b = Fake("a", weight=3.0), Fake("b", weight=1.0)
    r = router(a, b)

    async def many() -> None:
        for _ in range(400):
            answer = await r.open("/chat/completions", {}, stream=False, request_id="x")
            r.finish(answer)

    run(many())
    assert a.calls > b.calls  # idle: the heavier wins every pair it is in


def test_full_deployment_is_skipped() -> None:
    a, b = Fake("a", max_concurrency=1), Fake("b")
    a.health.outstanding = 1
    r = router(a, b)
    answer = run(r.open("/x", {}, stream=False, request_id="x"))
    assert answer.deployment is b and b.health.outstanding == 1
    r.finish(answer)
    assert b.health.outstanding == 0


def test_failure_is_retried_on_another_and_counted() -> None:
    a = Fake("a", [UpstreamFailure("a: HTTP 500")])
    b = Fake("b", [UpstreamFailure("b: HTTP 500")])
    r = router(a, b)
    answer = run(r.open("/x", {}, stream=False, request_id="x"))
    assert a.calls + b.calls == 3  # two failures, then the one that still had a script left
    assert answer.body is not None
    assert a.health.failures + b.health.failures == 2
    other = b if answer.deployment is a else a
    assert (answer.deployment.health.outstanding, other.health.outstanding) == (1, 0)


def test_cool_down_after_allowed_fails_and_unreachable_at_once() -> None:
    a = Fake("a")
    r = router(a)
    events: list[tuple[str, bool]] = []
    r.on_health = lambda model, name, healthy: events.append((name, healthy))
    r._failed(a, UpstreamFailure("x"))
    assert r.ready
    r._failed(a, UpstreamFailure("x"))
    assert not r.ready and events == [("a", False)]
    b = Fake("b")
    r2 = router(b)
    r2._failed(b, UpstreamFailure("refused", unreachable=True))
    assert not r2.ready


def test_429_pauses_for_its_retry_after_only() -> None:
    a = Fake("a")
    r = router(a)
    r._failed(a, UpstreamFailure("busy", retry_after=2.0))
    left = a.health.cooldown_until - time.monotonic()
    assert 1.5 < left <= 2.0


def test_client_fault_is_not_retried() -> None:
    a = Fake("a", [ClientFault(400, {"message": "bad"})])
    b = Fake("b", [ClientFault(400, {"message": "bad"})])
    r = router(a, b)
    with pytest.raises(ClientFault):
        run(r.open("/x", {}, stream=False, request_id="x"))
    assert a.calls + b.calls == 1
    assert a.health.outstanding == b.health.outstanding == 0


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (UpstreamFailure("t", timeout=True), UpstreamTimeout),
        (UpstreamFailure("k", auth=True), UpstreamAuthFailed),
        (UpstreamFailure("boom"), UpstreamError),
    ],
)
def test_giving_up_names_the_last_failure(failure: UpstreamFailure, error: type) -> None:
    a = Fake("a", [failure, failure, failure])
    r = router(a, policy=RetryPolicy(retries=2, backoff=0.001, allowed_fails=10))
    with pytest.raises(error) as caught:
        run(r.open("/x", {}, stream=False, request_id="x"))
    assert "http://" not in caught.value.message  # nothing of the deployment's address
    assert a.health.outstanding == 0


def test_all_cooling_down_is_503_with_retry_after() -> None:
    a = Fake("a")
    r = router(a)
    r.cool_down(a, 12, "test")
    with pytest.raises(NoHealthyDeployment) as caught:
        run(r.open("/x", {}, stream=False, request_id="x"))
    assert caught.value.status == 503 and of_error(caught.value)["retry-after"] in ("11", "12")
    assert a.calls == 0


def test_success_after_cool_down_ran_out_reports_healthy() -> None:
    a = Fake("a")
    r = router(a)
    events: list[bool] = []
    r.on_health = lambda model, name, healthy: events.append(healthy)
    r.cool_down(a, 0.0, "test")  # already over
    answer = run(r.open("/x", {}, stream=False, request_id="x"))
    r.finish(answer)
    assert events == [False, True] and a.health.cooldown_until == 0.0


def test_waits_for_a_free_slot() -> None:
    a = Fake("a", max_concurrency=1)
    r = router(a)

    async def scenario() -> list[str]:
        first = await r.open("/x", {}, stream=False, request_id="1")
        waiting = asyncio.create_task(r.open("/x", {}, stream=False, request_id="2"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        r.finish(first)
        second = await asyncio.wait_for(waiting, 1)
        r.finish(second)
        return [first.deployment.name, second.deployment.name]

    assert run(scenario()) == ["a", "a"]

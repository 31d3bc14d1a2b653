"""Routing one public model over its upstream deployments: balancing, health and retries.

Rules:
- Balancing: among deployments that are not cooling down and have a free slot, power of two
  choices weighted by `weight`: sample two, send to the one with fewer requests in flight per
  unit of weight. A deployment at `max_concurrency` is skipped; when all are full the request
  waits for a slot (bounded by the retry deadline).
- Batch lines (`background`, issue 21): each deployment with a `max_concurrency` gives them at
  most `batch_seats` of it — floor(max_concurrency × batch_share), at least 1 — counted per
  TokenDock process (per replica: not shared between replicas). When every deployment's batch
  seats are taken a batch line waits for one (cancellable, as long as it takes; the wait does
  not use up the retry deadline) instead of failing. Interactive requests never wait for batch
  seats; batch lines count in `max_concurrency` like any request. Without a `max_concurrency`
  there is no cap on batch lines either.
- Passive health: a deployment that cannot be connected to, rejects TokenDock's key, or answers
  429 cools down at once; other failures (5xx, timeouts, broken streams) cool it down after
  `allowed_fails` in a row. A success resets the count.
- Active health: every `probe_seconds` each deployment's /models is fetched; a failed probe
  cools it down, a good probe ends its cool-down early (recovery).
- Retries: only before the first byte reached the client, i.e. inside `open()`. Each failure is
  retried on another deployment when there is one, after an exponential back-off with jitter
  (at least the upstream's `retry-after`), within `retries` and the total `deadline`.
- Nothing is retried after `open()` returned: the caller streams, and reports the outcome with
  `finish()` so the deployment's slot and health are kept right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from tokendock.errors import (
    NoHealthyDeployment,
    ServiceUnavailable,
    TokenDockError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamTimeout,
)
from tokendock.inference.upstream.client import Answer, Deployment, UpstreamFailure
from tokendock.inference.upstream.transport import UpstreamTransport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int = 2
    deadline: float = 30.0
    backoff: float = 0.05  # first back-off, doubled per attempt, full jitter
    backoff_cap: float = 2.0
    allowed_fails: int = 3
    cooldown: float = 30.0
    probe_every: float = 10.0  # 0 = no active probes


# Seconds between a waiting batch line's looks at the deployments, when no request left one
# meanwhile (a cool-down ending frees no seat: nothing else would wake it).
BATCH_RECHECK = 1.0


class Router:
    """`transport`: the HTTP client shared by every router (inference/upstream/transport.py),
    made by the composition root before the routers; the pool opens it at start-up."""

    def __init__(
        self,
        model_id: str,
        deployments: Sequence[Deployment],
        policy: RetryPolicy,
        transport: UpstreamTransport,
    ):
        self.model_id = model_id
        self.deployments = list(deployments)
        self.policy = policy
        self.transport = transport
        self._freed = asyncio.Event()
        self._waiting = 0
        # (model, deployment, healthy) on every change of a deployment's health: for metrics.
        self.on_health: Callable[[str, str, bool], None] | None = None

    @property
    def ready(self) -> bool:
        now = time.monotonic()
        return any(not d.health.cooling(now) for d in self.deployments)

    def status(self) -> list[dict[str, Any]]:
        """Each deployment's health, for /ready and the metrics."""
        now = time.monotonic()
        return [
            {
                "name": d.name,
                "state": "cooling_down" if d.health.cooling(now) else "healthy",
                "in_flight": d.health.outstanding,
                "batch_in_flight": d.health.batch,
                "failures_in_a_row": d.health.failures,
                "last_error": d.health.last_error,
            }
            for d in self.deployments
        ]

    async def open(
        self,
        path: str,
        payload: dict[str, Any],
        *,
        stream: bool,
        request_id: str,
        background: bool = False,
    ) -> Answer:
        """Send the request to a deployment, retrying failures on others, until one commits.
        Raises the client's own error (ClientFault) as is, or a TokenDockError when every try
        failed. The caller must `finish()` the returned answer. `background`: a batch line
        (at most a deployment's `batch_seats`; waits for one as long as it takes)."""
        session = self.transport.session

        async def attempt(deployment: Deployment) -> Answer:
            payload["model"] = deployment.spec.model or self.model_id
            body = orjson.dumps(payload)
            return await deployment.open(session, path, body, stream=stream, request_id=request_id)

        return await self._tries(attempt, request_id, background)

    async def send(
        self,
        path: str,
        body: Callable[[str], AsyncIterable[bytes]],
        content_type: str,
        *,
        request_id: str,
        retry: Callable[[], bool],
        background: bool = False,
    ) -> Answer:
        """A pass-through body (inference/upstream/passthrough.py): `body(model)` makes it for
        a deployment's model name; the answer commits once the deployment's status is 200 (its
        bytes are the caller's to read: `Answer.response`). `retry()` is asked after a failed try:
        it raises the client's own error when the client's body is what failed (the deployment
        is not blamed), and says whether the body can be sent again (False: a live body already
        went out — a 502, not retried)."""
        session = self.transport.session

        async def attempt(deployment: Deployment) -> Answer:
            model = deployment.spec.model or self.model_id
            return await deployment.send(
                session, path, body(model), content_type, request_id=request_id
            )

        return await self._tries(attempt, request_id, background, retry)

    async def _tries(
        self,
        attempt: Callable[[Deployment], Awaitable[Answer]],
        request_id: str,
        background: bool,
        retry: Callable[[], bool] | None = None,
    ) -> Answer:
        """THE retry loop: a deployment, the attempt; on failure another deployment after a
        back-off, within `retries` and the `deadline`."""
        policy = self.policy
        deadline = time.monotonic() + policy.deadline
        tried: set[str] = set()
        last: UpstreamFailure | None = None
        for number in range(policy.retries + 1):
            asked = time.monotonic()
            deployment = await self._acquire(tried, deadline, first=number == 0, batch=background)
            if deployment is None:
                break
            if background:  # a batch line's wait for a seat is not the retries' time
                deadline += time.monotonic() - asked
            try:
                answer = await attempt(deployment)
            except UpstreamFailure as failure:
                self._release(deployment, background)
                again = True if retry is None else retry()  # raises the client body's error
                self._failed(deployment, failure)
                if not again:
                    log.warning(
                        "request %s: %s (its body went out: not retried)", request_id, failure
                    )
                    raise UpstreamError(
                        f"The upstream server for '{self.model_id}' failed while receiving the "
                        "request's body; send it again."
                    ) from None
                last = failure
                tried.add(deployment.name)
                log.warning("request %s: %s (attempt %d)", request_id, failure, number + 1)
                wait = random.uniform(0, min(policy.backoff_cap, policy.backoff * 2**number))
                wait = max(wait, failure.retry_after or 0.0)
                if not failure.retryable or time.monotonic() + wait >= deadline:
                    break
                await asyncio.sleep(wait)
                continue
            except BaseException:  # the client's own error (ClientFault) too: as is
                self._release(deployment, background)
                raise
            answer.background = background
            return answer
        raise _give_up(self.model_id, last)

    def finish(self, answer: Answer, failure: UpstreamFailure | None = None) -> None:
        """The answer was consumed (or abandoned): free its slot and record how it went."""
        deployment = answer.deployment
        self._release(deployment, answer.background)
        if failure is None:
            deployment.health.failures = 0
            if deployment.health.cooldown_until:  # its cool-down ran out and it works again
                deployment.health.cooldown_until = 0.0
                if self.on_health is not None:
                    self.on_health(self.model_id, deployment.name, True)
        else:
            self._failed(deployment, failure)

    # -- choosing ----------------------------------------------------------------------

    async def _acquire(
        self, tried: set[str], deadline: float, *, first: bool, batch: bool = False
    ) -> Deployment | None:
        while True:
            now = time.monotonic()
            healthy = [d for d in self.deployments if not d.health.cooling(now)]
            if not healthy:
                if first:
                    raise _all_down(self.model_id, self.deployments, now)
                return None
            fresh = [d for d in healthy if d.name not in tried] or healthy
            open_slots = [d for d in fresh if _has_slot(d) and (not batch or _has_batch_seat(d))]
            if open_slots:
                chosen = _pick(open_slots)
                chosen.health.outstanding += 1
                chosen.health.batch += batch
                return chosen
            if batch:  # a batch line waits for a seat, however long (cancellable)
                await self._wait_freed(BATCH_RECHECK)
                continue
            # Every candidate is at its max_concurrency: wait for a slot to free up.
            if now >= deadline:
                raise ServiceUnavailable(
                    f"Every deployment of '{self.model_id}' is at its concurrency limit; "
                    "try again shortly.",
                    code="deployments_busy",
                )
            await self._wait_freed(deadline - now)

    async def _wait_freed(self, most: float) -> None:
        """Until a request leaves a deployment, or `most` seconds (a cool-down may end)."""
        self._waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), most)
        finally:
            self._waiting -= 1

    def _release(self, deployment: Deployment, batch: bool = False) -> None:
        deployment.health.outstanding -= 1
        deployment.health.batch -= batch
        if self._waiting:
            self._freed.set()
            self._freed = asyncio.Event()

    # -- health ------------------------------------------------------------------------

    def _failed(self, deployment: Deployment, failure: UpstreamFailure) -> None:
        health = deployment.health
        health.failures += 1
        health.last_error = failure.message
        at_once = failure.auth or failure.retry_after is not None or failure.unreachable
        if at_once or health.failures >= self.policy.allowed_fails:
            pause = self.policy.cooldown
            if failure.retry_after is not None and not failure.auth:
                pause = min(max(failure.retry_after, 1.0), self.policy.cooldown)
            self.cool_down(deployment, pause, failure.message)

    def cool_down(self, deployment: Deployment, seconds: float, reason: str) -> None:
        health = deployment.health
        if not health.cooling(time.monotonic()):
            if self.on_health is not None:
                self.on_health(self.model_id, deployment.name, False)
            log.warning(
                "deployment %s of %s cooling down for %.0fs: %s",
                deployment.name,
                self.model_id,
                seconds,
                reason,
            )
        health.cooldown_until = time.monotonic() + seconds

    async def probe(self) -> None:
        """Probe every deployment once (active health)."""
        session = self.transport.session
        await asyncio.gather(*(self._probe(d, session) for d in self.deployments))

    async def _probe(self, deployment: Deployment, session: aiohttp.ClientSession) -> None:
        try:
            await deployment.probe(session)
        except UpstreamFailure as failure:
            deployment.health.last_error = failure.message
            self.cool_down(deployment, self.policy.cooldown, failure.message)
            return
        health = deployment.health
        if health.cooldown_until:
            if health.cooling(time.monotonic()):
                log.info("deployment %s of %s recovered", deployment.name, self.model_id)
            if self.on_health is not None:
                self.on_health(self.model_id, deployment.name, True)
            health.cooldown_until = 0.0
            health.failures = 0


def batch_seats(deployment: Deployment) -> int | None:
    """Batch lines this process may have in flight on `deployment` at once: its `batch_share`
    of `max_concurrency`, rounded down, at least 1 (None: no `max_concurrency`, no cap)."""
    spec = deployment.spec
    if spec.max_concurrency == 0:
        return None
    return max(1, math.floor(spec.max_concurrency * spec.batch_share))


def _has_batch_seat(deployment: Deployment) -> bool:
    seats = batch_seats(deployment)
    return seats is None or deployment.health.batch < seats


def _has_slot(deployment: Deployment) -> bool:
    cap = deployment.spec.max_concurrency
    return cap == 0 or deployment.health.outstanding < cap


def _pick(candidates: list[Deployment]) -> Deployment:
    """Power of two choices, weighted: fewer requests in flight per unit of weight wins."""
    if len(candidates) == 1:
        return candidates[0]
    weights = [d.spec.weight for d in candidates]
    a = random.choices(range(len(candidates)), weights)[0]
    b = random.choices(range(len(candidates) - 1), weights[:a] + weights[a + 1 :])[0]
    b += b >= a
    da, db = candidates[a], candidates[b]
    load_a = (da.health.outstanding + 1) / da.spec.weight
    load_b = (db.health.outstanding + 1) / db.spec.weight
    return db if load_b < load_a else da


def _all_down(model_id: str, deployments: Sequence[Deployment], now: float) -> TokenDockError:
    wait = min(d.health.cooldown_until for d in deployments) - now
    error = NoHealthyDeployment(
        f"Every deployment of the model '{model_id}' is unavailable right now; try again in "
        f"{max(1, round(wait))} s."
    )
    error.retry_after = wait
    return error


def _give_up(model_id: str, last: UpstreamFailure | None) -> TokenDockError:
    if last is None:
        return NoHealthyDeployment(
            f"Every deployment of the model '{model_id}' is unavailable right now."
        )
    if last.auth:
        return UpstreamAuthFailed(
            f"The upstream server for '{model_id}' rejected the gateway's credentials. This is "
            "a server configuration problem; the operator has been told in the logs."
        )
    if last.timeout:
        return UpstreamTimeout(f"The upstream server for '{model_id}' did not answer in time.")
    if last.retry_after is not None:
        error = ServiceUnavailable(
            f"The upstream servers for '{model_id}' are overloaded; try again shortly.",
            code="upstream_overloaded",
        )
        error.retry_after = last.retry_after
        return error
    return UpstreamError(f"The upstream server for '{model_id}' failed to answer.")

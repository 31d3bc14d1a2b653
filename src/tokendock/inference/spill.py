"""Spill-over: a model served by the embedded llama.cpp engine that sends a request to one of its
upstream deployments when the engine is too busy to start it soon.

The catalog gives such a model a GGUF, `[[deployments]]` and `spill_after` (seconds). Per
request, when it is admitted (`run`):

- the engine's estimated wait for a new request is over `spill_after` — or, with
  `spill_after = 0`, no slot is free — and a deployment is healthy with room for one more
  request: the request runs upstream (`Tally.deployment` names the deployment, so its usage
  record and access line say where it ran);
- otherwise it runs on the engine and waits for a slot there, as any request does.

A batch line (`InferenceRequest.background`) never spills: it can wait for the engine, where it
takes only slots no interactive request wants, and it must not take deployment capacity from
the interactive requests that do spill.

The price is the public model's, so a spilled request is billed like a local one (from the
upstream's reported usage). The decision is made once, before any work: a spilled request does
not come back, and one kept local is not sent away later. Two requests admitted at the same
moment may both see the same free slot and both stay local (the engine takes a job only after
tokenizing it); the second then waits its turn.

`bound` applies the embedded engine's checks, which are the stricter: a request the engine
cannot serve (audio output, `suffix`, `best_of`, a schema its grammar cannot follow …) is
refused with its 400 even though an upstream might take it — a request's answer must not depend
on how busy the server happens to be. The upstream's checks run too (its strict JSON body), and
the credit hold covers the larger of the two worst cases.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from tokendock.catalog import ModelSpec
from tokendock.inference.backend import Bound, Execution, InferenceRequest
from tokendock.inference.engine.embedded import EmbeddedBackend
from tokendock.inference.upstream.backend import UpstreamBackend
from tokendock.inference.upstream.router import Router

log = logging.getLogger(__name__)


class Load(Protocol):
    """What spill-over reads of the engine (inference/engine/llama.py `LlamaEngine`)."""

    @property
    def ready(self) -> bool: ...

    @property
    def saturated(self) -> bool:
        """No slot is free."""
        ...

    def estimated_wait(self) -> float:
        """Seconds a newly arriving choice would wait for a slot (0.0: a slot is free now)."""
        ...


class SpillBackend:
    """The embedded engine first; its deployments when the engine's wait exceeds `spill_after`.
    `on_spill(model)` is told of each spilled request (a metric)."""

    def __init__(self, embedded: EmbeddedBackend, upstream: UpstreamBackend, load: Load):
        if embedded.spec.spill_after is None:
            raise ValueError(f"model {embedded.spec.id!r} has no spill_after")
        self.embedded = embedded
        self.upstream = upstream
        self.load = load
        self.spec: ModelSpec = embedded.spec
        self.spill_after = embedded.spec.spill_after
        self.spilled = 0  # requests sent upstream by this process
        self.on_spill: Callable[[str], None] | None = None

    @property
    def router(self) -> Router:
        return self.upstream.router

    @property
    def ready(self) -> bool:
        """The embedded engine is loaded (the deployments' health is not this process's)."""
        return self.embedded.ready

    async def open(self) -> None:
        """Loads the engine; the shared pool (inference/upstream/pool.py) opens the upstreams."""
        await self.embedded.open()

    async def close(self) -> None:
        await self.embedded.close()

    def bound(self, req: InferenceRequest) -> Bound:
        local = self.embedded.bound(req)
        remote = self.upstream.bound(req)
        return Bound(
            max(local.prompt_tokens, remote.prompt_tokens),
            max(local.completion_tokens, remote.completion_tokens),
            local.grammar,  # the engine's, if the request stays here
        )

    async def count(self, req: InferenceRequest) -> int:
        """Counted exactly by the embedded engine, wherever the request would run."""
        return await self.embedded.count(req)

    def should_spill(self) -> bool:
        """The rule: the engine is loaded and too busy, and a deployment can take the request.
        (An engine still loading is not spilled from: the model is not ready yet.)"""
        load = self.load
        if not load.ready:
            return False
        busy = load.estimated_wait() > self.spill_after
        if not busy and self.spill_after == 0:
            busy = load.saturated
        return busy and can_take(self.router)

    def run(
        self, req: InferenceRequest, *, owner: str, request_id: str, bound: Bound | None = None
    ) -> Execution:
        if not req.background and self.should_spill():  # a batch line waits for the engine
            self.spilled += 1
            log.info("request %s: %s spills over to its deployments", request_id, self.spec.id)
            if self.on_spill is not None:
                self.on_spill(self.spec.id)
            return self.upstream.run(req, owner=owner, request_id=request_id, bound=bound)
        return self.embedded.run(req, owner=owner, request_id=request_id, bound=bound)


def can_take(router: Router) -> bool:
    """Some deployment is healthy (not cooling down) and below its `max_concurrency`: spilling
    to deployments that are all full would only queue the request somewhere else."""
    now = time.monotonic()
    for deployment in router.deployments:
        cap = deployment.spec.max_concurrency
        room = cap == 0 or deployment.health.outstanding < cap
        if room and not deployment.health.cooling(now):
            return True
    return False


def embedded_of(backend: object) -> EmbeddedBackend | None:
    """The embedded engine's backend behind `backend` (itself, or a spill-over model's), for
    exact token counts; None for an upstream-only model."""
    if isinstance(backend, SpillBackend):
        return backend.embedded
    return backend if isinstance(backend, EmbeddedBackend) else None

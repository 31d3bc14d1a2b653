"""The one request pipeline behind every endpoint: bound → admit → run → settle exactly once.

A web adapter parses its wire format into one `InferenceRequest` and authenticates the key; then

    call = await pipeline.start(key, req, request_id, idempotency=…)   # or a Replay
    await call.begin()
    async for event in call.events(): …       # or: answer = await call.collect()

1. bound — the model's backend (404), its cheap checks (400 naming the field) and the worst
   case in tokens; nothing that grows with the input's tokens happens before admission;
2. idempotency — a retry with the same Idempotency-Key gets the stored answer (`Replay`);
3. admit — `gate.admitted(…)`: allow-list (403), rate limits (429), one credit hold (402);
4. run — `call.begin()` (tokenize; route until an upstream commits), then the call's events;
   the client going away cancels / closes them;
5. settle — leaving the `admitted` block, exactly once, whatever the exit (services/gate.py).

A `Call` ends once: its events run out or fail, the consumer closes them, or `abandon()` (the
client left before reading). Each of those leaves the same `admitted` block, so the settlement
has one entry point. `collect()` reads a whole (non-streamed) answer.

Running calls are registered by account and key (services/running.py) from admission to their
end: `stop(error)` — an account disabled, a key revoked — makes the call raise `error` where it
is read (a stream's error event), ending the backend's work; it settles as any failure does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from tokendock.billing.ledger import Settlement
from tokendock.errors import InvalidRequest, TokenDockError
from tokendock.inference.backend import (
    Backend,
    Execution,
    InferenceRequest,
    Output,
    Tally,
)
from tokendock.services import bounding
from tokendock.services.answer import Answer
from tokendock.services.gate import Gate, Ticket
from tokendock.services.idempotency import Idempotency, Replay
from tokendock.services.running import Running
from tokendock.storage.accounts import KeyRow


class Backends(Protocol):
    def backend(self, model: str) -> Backend:
        """The model's backend; ModelNotFound (404) when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    key: str
    body: bytes


class Pipeline:
    def __init__(
        self,
        backends: Backends,
        gate: Gate,
        idempotency: Idempotency,
        running: Running | None = None,
    ):
        self._backends = backends
        self._gate = gate
        self._idempotency = idempotency
        self.running = Running() if running is None else running

    async def start(
        self,
        key: KeyRow,
        req: InferenceRequest,
        request_id: str,
        *,
        idempotency: IdempotencyKey | None = None,
        batch: bool = False,
    ) -> Call | Replay:
        backend = self._backends.backend(req.model)
        _check_task(backend, req)
        bound = await bounding.bound(backend, req)  # a schema's grammar: off the event loop
        claim = None
        if idempotency is not None:
            replay = await self._idempotency.begin(key.id, idempotency.key, idempotency.body)
            if replay is not None:
                return replay
            claim = (key.id, idempotency.key)
        try:
            ticket = await self._gate.admit(
                key, req.model, bound, request_id, user=req.user, batch=batch
            )
        except BaseException:
            if claim is not None:
                await self._idempotency.failed(*claim)
            raise
        ticket.endpoint = req.endpoint or None
        try:
            owner = f"account:{key.account_id}"  # the backend is fair between accounts
            execution = backend.run(req, owner=owner, request_id=request_id, bound=bound)
        except BaseException as exc:  # nothing ran: concluding releases the hold
            await self._gate.conclude(ticket, exc)
            if claim is not None:
                await self._idempotency.failed(*claim)
            raise
        ticket.tally = execution.tally
        call = Call(self._idempotency, self._gate, ticket, execution, req, claim, key, self.running)
        self.running.add(call)  # until it ends; stopped at once if the key was just revoked
        return call


class Call:
    """One admitted request running on its backend."""

    def __init__(
        self,
        idempotency: Idempotency,
        gate: Gate,
        ticket: Ticket,
        execution: Execution,
        req: InferenceRequest,
        claim: tuple[int, str] | None,
        key: KeyRow | None = None,
        running: Running | None = None,
    ):
        self._idempotency = idempotency
        self._gate = gate
        self._ticket = ticket
        self._execution = execution
        self.request = req
        self._claim = claim
        self._reading = False
        self._ended = False
        self.account_id = 0 if key is None else key.account_id
        self.key_id = 0 if key is None else key.id
        self._running = running
        # stop(): the error to raise instead of the work; `_waiting` while the reading task is
        # awaiting the backend (only then is it cancelled to interrupt it); `_cancelled` when
        # stop() did cancel it, so that cancellation is taken back and `_stop` raised instead.
        self._stop: TokenDockError | None = None
        self._task: asyncio.Task[object] | None = None
        self._waiting = False
        self._cancelled = False
        self._iterator: AsyncIterator[Output] | None = None
        self._closing: asyncio.Future[None] | None = None  # stop()'s closing of the events

    @property
    def ticket(self) -> Ticket:
        return self._ticket

    @property
    def settlement(self) -> Settlement | None:
        return self._ticket.settlement

    @property
    def tally(self) -> Tally | None:
        """What was billed (once ended); None when nothing was."""
        return self._ticket.outcome

    @property
    def prompt_tokens(self) -> int:
        return self._execution.prompt_tokens

    async def begin(self) -> None:
        """What must precede the first event (tokenize; route until an upstream commits). A
        failure or a cancellation (the client left) ends the call before it propagates."""
        try:
            self._raise_if_stopped()
            self._task = asyncio.current_task()
            self._waiting = True
            try:
                await self._execution.begin()
            finally:
                self._waiting = False
        except BaseException as exc:
            instead = self._instead()
            self._execution.abandon()
            await self._end("error", instead or exc)
            if instead is not None:
                raise instead from None
            raise
        self._ticket.begun = True

    async def events(self) -> AsyncIterator[Output]:
        """The answer's events; the call ends (and settles) when they end, however."""
        self._reading = True
        if self._claim is not None and self.request.stream:
            claim, self._claim = self._claim, None
            await self._idempotency.streamed(*claim)  # streams are not replayed
        status = "client_disconnected"
        failure: BaseException | None = None
        iterator = self._iterator = aiter(self._execution.events())
        self._task = asyncio.current_task()
        try:
            while True:
                self._raise_if_stopped()
                self._waiting = True
                try:
                    event = await anext(iterator)
                except StopAsyncIteration:
                    break
                finally:
                    self._waiting = False
                yield event
            status = "ok"
        except BaseException as exc:
            instead = self._instead()
            if instead is not None:  # stop() interrupted the backend: its error, not ours
                status, failure = "error", instead
                raise instead from None
            if isinstance(exc, Exception):
                status, failure = "error", exc
            raise
        finally:
            # Closing it stops the backend's work (stop() may be closing it already).
            with contextlib.suppress(RuntimeError):
                await iterator.aclose()  # type: ignore[attr-defined]
            await self._end(status, failure)

    async def collect(self) -> Answer:
        """A whole answer: every choice's text, tool calls and finish reason."""
        answer = Answer()
        async for event in self.events():
            answer.take(event)
        return answer

    async def whole(self) -> Answer:
        """`begin()` then `collect()`: a non-streamed answer, the call ended and settled."""
        await self.begin()
        return await self.collect()

    async def answered(self, body: bytes) -> None:
        """The whole answer went out: an Idempotency-Key retry gets these bytes back."""
        if self._claim is not None:
            claim, self._claim = self._claim, None
            await self._idempotency.done(*claim, 200, body)

    async def abandon(self) -> None:
        """The client left: stop the work unless its events are being read (their closing
        ends the call), and end the call. A no-op once ended."""
        if self._ended:
            return
        if not self._reading:
            self._execution.abandon()
        await self._end("client_disconnected", None)

    def stop(self, error: TokenDockError) -> None:
        """End the call with `error` (services/running.py): raised where the call is read. A
        reader awaiting the backend is interrupted; a reader busy elsewhere (writing the last
        event to a slow client) finds it when it comes back, and the backend stops now."""
        if self._ended or self._stop is not None:
            return
        self._stop = error
        task = self._task
        if self._waiting and task is not None and not task.done():
            self._cancelled = True
            task.cancel()
        elif self._iterator is not None:
            self._closing = asyncio.ensure_future(_close(self._iterator))

    def _raise_if_stopped(self) -> None:
        if self._stop is not None:
            self._instead()  # a cancellation the backend swallowed is taken back too
            raise self._stop

    def _instead(self) -> TokenDockError | None:
        """When `stop()` cancelled the reading task: take that cancellation back and return
        the error to raise instead (None when someone else cancelled the task too)."""
        if not self._cancelled or self._stop is None:
            return None
        self._cancelled = False
        task = asyncio.current_task()
        if task is not None and task.uncancel() > 0:
            return None  # also cancelled by someone else (the client left, shutdown)
        return self._stop

    async def _end(self, status: str, failure: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._running is not None:
            self._running.discard(self)
        self._ticket.status = status
        try:
            await self._gate.conclude(self._ticket, failure)  # THE settlement, once
        finally:
            if self._claim is not None and status != "ok":
                claim, self._claim = self._claim, None
                await self._idempotency.failed(*claim)


async def _close(iterator: AsyncIterator[Output]) -> None:
    with contextlib.suppress(Exception):
        await iterator.aclose()  # type: ignore[attr-defined]


def _check_task(backend: Backend, req: InferenceRequest) -> None:
    """An embedding model answers only embedding requests, and the other models only the rest;
    an opaque body only a model whose catalog task is the one it declares."""
    if req.opaque is not None or req.kind == "opaque":
        task = req.opaque.task if req.opaque is not None else "?"
        if backend.spec.task != task:
            raise InvalidRequest(
                f"The model '{req.model}' does not serve '{task}' requests.",
                param="model",
                code="model_not_supported",
            )
        return
    embedding = backend.spec.task == "embedding"
    if embedding and req.kind != "embed":
        raise InvalidRequest(
            f"The model '{req.model}' is an embedding model: use POST /v1/embeddings.",
            param="model",
            code="model_not_supported",
        )
    if req.kind == "embed" and not embedding:
        raise InvalidRequest(
            f"The model '{req.model}' does not make embeddings; use an embedding model.",
            param="model",
            code="model_not_supported",
        )

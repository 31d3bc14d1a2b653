"""The batch runner: inside every `tokendock serve` process (`batch_runner`, on by default), it
validates new batches, feeds their lines to the one request pipeline as capacity frees, and
finalizes them. No other process is needed; replicas sharing a database share the work.

Each round (every POLL seconds, or at once when the API wakes it):
1. validate batches that are `validating` (a lease on the batch row: one replica each);
2. end what was cancelled or ran out of time: lines not started become `canceled` / `expired`;
3. feed: claim lines (storage/batches.py: a lease per line, its version the fencing token) up
   to `concurrency` in flight in this process, round robin between accounts, and run each as
   one pipeline call — `Pipeline.start(…, batch=True)`: the key's allow-list, limits (at most
   `batch_rate_share` of them) and spend limit, a hold, the batch price; the engine gives it
   the lowest priority (InferenceRequest.background);
4. finalize batches whose lines are all done: the output and error files, the final status.

Exactly once: a line's result is written in its settlement's transaction, only while its claim
holds (Ticket.result → billing: records.LineResult). A line whose process died is claimed
again once its lease lapses and runs from the start; the dead attempt's hold is swept without
charge. A line stopped by a shutdown of this process is given back (pending again) and its hold
released without charge. Rate limits never fail a line: it waits for its window; only
insufficient credit and invalid requests become error lines, and the batch goes on. The key
revoked or the account disabled: its running lines end at once (services/running.py) and the
rest become error lines at the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tokendock.billing.records import LineResult
from tokendock.errors import (
    InternalError,
    RateLimited,
    ServiceUnavailable,
    TokenDockError,
)
from tokendock.inference.backend import Tally
from tokendock.protocol.errors import envelope
from tokendock.services.batch_input import Checked, read_input
from tokendock.services.batch_lines import Adapters
from tokendock.services.batch_output import Finalizer
from tokendock.services.gate import Ticket
from tokendock.services.pipeline import Call, Pipeline
from tokendock.storage.accounts import KeyRow
from tokendock.storage.batch_claims import ClaimedLine
from tokendock.storage.batches import BatchRow, BatchStore

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between rounds when nothing wakes the runner
MAX_WAIT = 5.0  # seconds a rate-limited line sleeps at most before asking again

KeyLookup = Callable[[int, int], Awaitable[KeyRow | None]]


def now() -> datetime:
    return datetime.now(UTC)


def usable(key: KeyRow | None) -> str | None:
    """Why the key may no longer run work (None: it may)."""
    if key is None or key.revoked_at is not None:
        return "The API key that created this batch was revoked."
    if key.account_disabled:
        return "The account that created this batch is disabled."
    if key.expires_at is not None and key.expires_at <= now():
        return "The API key that created this batch has expired."
    return None


def error_result(status: int, request_id: str, body: dict[str, Any]) -> str:
    return orjson.dumps({"status_code": status, "request_id": request_id, "body": body}).decode()


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        pipeline: Pipeline,
        adapters: Adapters,
        keys: KeyLookup,
        finalizer: Finalizer,
        *,
        owner: str,
        concurrency: int = 16,
        lease_seconds: float = 30.0,
        max_lines: int = 50_000,
        max_line_bytes: int = 4 * 1024 * 1024,
        poll: float = POLL,
        storage_limit: int | None = None,
    ):
        self._store = store
        self._pipeline = pipeline
        self._adapters = adapters
        self._keys = keys
        self._finalizer = finalizer
        self.owner = owner
        self.concurrency = concurrency
        self._lease = timedelta(seconds=lease_seconds)
        self._max_lines = max_lines
        self._max_line = max_line_bytes
        self._poll = poll
        self._storage_limit = storage_limit  # the account's quota: batch lines count in it
        self._inflight: dict[tuple[str, int], ClaimedLine] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._served: dict[int, float] = {}  # account → when its lines were last fed
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Something changed (a batch created or cancelled): run a round now."""
        self._wake.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self) -> None:
        """Rounds until cancelled; then the lines running here are given back."""
        renewing = asyncio.ensure_future(self._renew_forever())
        try:
            while True:
                try:
                    await self.round()
                except Exception:
                    log.exception("batch runner: a round failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                self._wake.clear()
        finally:
            renewing.cancel()
            await self._stop()

    async def round(self) -> None:
        for batch in await self._store.with_status("validating"):
            if await self._store.lease_batch(batch.id, "validating", self.owner, self._until()):
                await self._validate(batch)
        for batch in await self._store.with_status("cancelling"):
            await self._store.close_pending(batch.id, "canceled", None)
            await self._finish_if_done(batch)
        active = await self._store.with_status("in_progress")
        feeding = []
        for batch in active:
            if batch.times["expired_at"] is None and batch.expires_at <= now():
                await self._store.move(batch.id, "in_progress", expired_at=now())
                batch = dataclasses.replace(batch, times={**batch.times, "expired_at": now()})
            if batch.times["expired_at"] is not None:
                await self._store.close_pending(batch.id, "expired", None)
                await self._finish_if_done(batch)
                continue
            feeding.append(batch)
        await self._feed(feeding)
        for batch in await self._store.with_status("finalizing"):  # a finalizer that died
            await self._finish_if_done(batch)

    # -- feeding lines ------------------------------------------------------------------

    async def _feed(self, batches: list[BatchRow]) -> None:
        """Claim lines up to this process's capacity, round robin between accounts (the one
        fed least recently first), each account's oldest batch first."""
        by_account: dict[int, list[BatchRow]] = {}
        for batch in batches:
            by_account.setdefault(batch.account_id, []).append(batch)
        keys: dict[tuple[int, int], KeyRow | None] = {}
        for batch in batches:
            which = (batch.account_id, batch.key_id)
            if which not in keys:
                keys[which] = await self._keys(*which)
            reason = usable(keys[which])
            if reason is not None:
                await self._revoked(batch, reason)
                by_account[batch.account_id].remove(batch)
        accounts = sorted(
            (a for a, bs in by_account.items() if bs), key=lambda a: self._served.get(a, 0.0)
        )
        for account in accounts:
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                return
            share = max(1, free // len(accounts))
            for batch in by_account[account]:
                key = keys[(batch.account_id, batch.key_id)]
                assert key is not None
                claims = await self._store.claim(batch.id, self.owner, share, self._until())
                for claim in claims:
                    self._start(batch, key, claim)
                self._served[account] = time.monotonic()
                if claims:
                    break
                await self._finish_if_done(batch)

    def _start(self, batch: BatchRow, key: KeyRow, claim: ClaimedLine) -> None:
        self._inflight[(claim.batch_id, claim.line)] = claim
        task = asyncio.ensure_future(self._run_line(batch, key, claim))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._inflight.pop((claim.batch_id, claim.line), None)
            if not self._stopping:
                self._wake.set()  # a seat is free: feed the next line now

        task.add_done_callback(done)

    async def _run_line(self, batch: BatchRow, key: KeyRow, claim: ClaimedLine) -> None:
        """Run the line until it has its result. An attempt refused after admission by a
        passing condition (the model still loading, the engine's queue full, no healthy
        upstream) that produced nothing is released without charge and made again."""
        pause = 0.1
        while not await self._attempt(batch, key, claim):
            await asyncio.sleep(pause * (1 + random.random() / 10))
            pause = min(pause * 2, MAX_WAIT)

    async def _attempt(self, batch: BatchRow, key: KeyRow, claim: ClaimedLine) -> bool:
        """One attempt at the line: True once its result is written (or its claim lost)."""
        request_id = f"{batch.id}-{claim.line}"
        call: Call | None = None
        again = False
        try:
            adapter = self._adapters[batch.endpoint]
            work = await adapter(batch.account_id, claim.body.encode())
            req = dataclasses.replace(
                work.request, background=True, endpoint=f"batch.{work.request.endpoint}"[:32]
            )
            call = await self._admitted(key, req, request_id)

            def result(ticket: Ticket, tally: Tally | None) -> LineResult | None:
                nonlocal again
                failure = ticket.failure
                if self._stopping and ticket.status == "client_disconnected":
                    return None  # this process stops: released whole, the line runs again
                if failure is None and ticket.status == "ok":
                    body = work.render(tally)
                    text = error_result(200, request_id, body)
                    return LineResult(batch.id, claim.line, claim.lease, "succeeded", text)
                if _passing(failure) and (tally is None or not tally.completion_tokens):
                    again = True
                    return None  # nothing produced: released whole, tried again
                err = _as_error(failure)
                if isinstance(err, InternalError):
                    log.error(
                        "batch %s line %d failed (%s)",
                        batch.id,
                        claim.line,
                        ticket.status,
                        exc_info=failure,
                    )
                text = error_result(err.status, request_id, envelope(err))
                return LineResult(batch.id, claim.line, claim.lease, "errored", text)

            call.ticket.result = result
            await call.begin()
            await work.read(call)
        except Exception as exc:
            if call is not None:
                return not again  # the call ended: its result went with its settlement
            err = _as_error(exc)
            if isinstance(err, InternalError):
                log.error("batch %s line %d failed", batch.id, claim.line, exc_info=exc)
            text = error_result(err.status, request_id, envelope(err))
            await self._store.write_result(claim, "errored", text)
        return not again

    async def _admitted(self, key: KeyRow, req: Any, request_id: str) -> Call:
        """The line's call, once its rate limits let it in: a 429 (or a full engine queue, a
        model loading) is waited out, never the line's result."""
        pause = 0.05
        while True:
            try:
                call = await self._pipeline.start(key, req, request_id, batch=True)
            except RateLimited as exc:
                retry = exc.retry_after if exc.retry_after is not None else MAX_WAIT
                if retry == float("inf"):
                    raise
                wait = min(max(retry, 0.01), MAX_WAIT)
            except ServiceUnavailable as exc:
                if exc.code == "model_unpriced":
                    raise
                wait = pause = min(pause * 2, MAX_WAIT)
            else:
                assert isinstance(call, Call)  # no Idempotency-Key: never a Replay
                return call
            await asyncio.sleep(wait * (1 + random.random() / 10))

    async def _revoked(self, batch: BatchRow, reason: str) -> None:
        """The key may no longer run work: every line not started is an error line."""
        body = {
            "error": {
                "message": reason,
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        }
        text = error_result(401, "", body)
        closed = await self._store.close_pending(batch.id, "errored", text)
        if closed:
            log.info("batch %s: %d lines not run (%s)", batch.id, closed, reason)
        await self._finish_if_done(batch)

    # -- validating and finishing -----------------------------------------------------------

    async def _validate(self, batch: BatchRow) -> None:
        checked = Checked(batch.endpoint, self._max_lines)

        async def add(start: int, good: list[tuple[str, str]]) -> None:
            await self._store.add_lines(
                batch.id, batch.account_id, start, good, self._storage_limit
            )

        try:
            await read_input(await self._finalizer.input(batch), checked, self._max_line, add)
        except TokenDockError as exc:  # the input file is gone
            checked.problem(exc.code or "invalid_file", exc.message, None, "input_file_id")
        problems = checked.problems
        if not problems and checked.count == 0:
            checked.problem("empty_file", "The input file has no requests.", None)
        if problems:
            await self._store.drop_lines(batch.id, batch.account_id)
            errors = orjson.dumps({"object": "list", "data": [p.json() for p in problems]}).decode()
            await self._store.move(
                batch.id,
                "validating",
                owner=self.owner,
                status="failed",
                failed_at=now(),
                errors=errors,
                lease_owner=None,
                lease_until=None,
            )
            return
        await self._store.move(
            batch.id,
            "validating",
            owner=self.owner,
            status="in_progress",
            in_progress_at=now(),
            total=checked.count,
            model=checked.model,
            lease_owner=None,
            lease_until=None,
        )

    async def _finish_if_done(self, batch: BatchRow) -> None:
        if any(b == batch.id for b, _ in self._inflight):
            return
        if await self._store.unfinished(batch.id):
            return
        if not await self._store.lease_batch(batch.id, batch.status, self.owner, self._until()):
            return
        if batch.status != "finalizing":
            moved = await self._store.move(
                batch.id,
                batch.status,
                owner=self.owner,
                status="finalizing",
                finalizing_at=now(),
            )
            if not moved:
                return
        fresh = await self._store.get(batch.account_id, batch.id)
        if fresh is not None:
            await self._finalizer.finish(fresh, self.owner)

    # -- leases -----------------------------------------------------------------------------

    def _until(self) -> datetime:
        return now() + self._lease

    async def _renew_forever(self) -> None:
        every = self._lease.total_seconds() / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self._store.renew(self.owner, list(self._inflight.values()), self._until())
            except Exception:
                log.exception("batch runner: renewing line claims failed")

    async def _stop(self) -> None:
        """Shutdown: the lines running here stop; their holds are released without charge and
        the lines given back, to run again here or on another replica."""
        self._stopping = True
        claims = list(self._inflight.values())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._store.give_back_all(claims)


def _as_error(exc: BaseException | None) -> TokenDockError:
    if isinstance(exc, TokenDockError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return InternalError("The request was interrupted.", code="interrupted")
    return InternalError("The server had an error while processing this request.")


def _passing(exc: BaseException | None) -> bool:
    """A refusal that passes with time (503: the model loading, a full queue, no healthy
    upstream): a batch line waits it out instead of failing."""
    return isinstance(exc, ServiceUnavailable) and exc.code != "model_unpriced"

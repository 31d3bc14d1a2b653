"""Admission and settlement, the same for every endpoint and every backend.

    ticket = await gate.admit(key, model, bound, request_id, user=…)
    ticket.tally = execution.tally          # what to bill, asked once the work is over
    …                                       # run the request
    await gate.conclude(ticket, failure)    # exactly once, on every exit (services/pipeline.py)

`admit`: the key's model allow-list (403), rate limits (429), then ONE atomic credit hold for
the worst case at the model's prices (402; no cache discount: what the cache holds is not known
yet). `conclude` — on every exit: success, an error, the client gone, a cancellation, the
shutdown deadline — settles exactly once, in ONE place (`_conclude`): the charge for what the
backend produced (its tally; prompt tokens read from a KV cache at the cached price) with the usage
record in the same transaction, the rest of the hold released, the unused token reservation
returned to the rate limiter. A request refused with a client error (or left by its client)
before the backend took it and did any work is released without a usage record. The settlement
is shielded from the caller's cancellation and tracked, so `drain()` waits for it at shutdown.

`access(key, model)` is THE model check of a key — unknown or switched-off model 404, a model
outside the key's allow-list 403 — for admission and for counting tokens alike. Counting
(`counting`) generates nothing and is not billed, but is limited like any request: one request
of RPM, the worst-case prompt tokens reserved against TPM (settled to the tokens counted) and a
concurrency slot held until the count is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from tokendock.billing.ledger import Hold, Ledger, Settlement, UsageRow
from tokendock.billing.pricing import Price
from tokendock.billing.records import LineResult
from tokendock.catalog import ModelSpec
from tokendock.errors import ModelNotAllowed, TokenDockError
from tokendock.inference.backend import Bound, Tally
from tokendock.limits.base import Admission, Limiter, Limits, Subject
from tokendock.services.models import ModelDirectory
from tokendock.storage.accounts import KeyRow

MAX_REMEMBERED = 10_000  # keys whose rate-limit subjects are kept built


@dataclass(slots=True)
class Ticket:
    """An admitted request. `tally` (set by whoever runs it) says what to bill; `status` how
    it ended. After the `admitted` block: `outcome` (what was billed, None when released) and
    `settlement` (None when released, or when the ledger could not be reached)."""

    hold: Hold
    price: Price
    rate: Admission | None
    request_id: str
    model: str
    user: str | None
    started: float = field(default_factory=time.monotonic)
    tally: Callable[[], Awaitable[Tally]] | None = None
    status: str = "ok"
    endpoint: str | None = None  # the API the request came in by, for its usage row
    begun: bool = False  # the backend accepted the run (tokenized it; an upstream committed)
    refused: bool = False  # it ended with a client error (4xx)
    outcome: Tally | None = None
    usage: UsageRow | None = None
    settlement: Settlement | None = None
    failure: BaseException | None = None  # how it failed, when it did
    # A batch line's result, written in the settlement's transaction while the line's claim
    # holds (services/batches/runner.py): built from the ticket and what was billed.
    # None from it: the attempt is given up (its process stops): released without charge.
    result: Callable[[Ticket, Tally | None], LineResult | None] | None = None


class Counting:
    """The `counting` block: admitted by the limiter alone; `admission` says the windows."""

    __slots__ = ("_gate", "_key", "_request_id", "_tokens", "admission", "counted")

    def __init__(self, gate: Gate, key: KeyRow, tokens: int, request_id: str):
        self._gate, self._key, self._tokens, self._request_id = gate, key, tokens, request_id
        self.admission: Admission | None = None
        self.counted: int | None = None  # set by the caller once counted

    async def __aenter__(self) -> Counting:
        limiter = self._gate._limiter
        subjects = self._gate.subjects(self._key)
        self.admission = await limiter.admit(subjects, self._tokens, self._request_id)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.admission is not None, "entered once"
        # A failed count (the template refused, the client left) did its work: no refund.
        used = self._tokens if self.counted is None else self.counted
        await self._gate._to_the_end(self._gate._limiter.settle(self.admission, used))


class Gate:
    def __init__(
        self,
        models: ModelDirectory,
        ledger: Ledger,
        limiter: Limiter,
        tiers: dict[str, Limits] | None = None,
        *,
        batch_share: float = 0.5,
    ):
        self._models = models
        self._ledger = ledger
        self._limiter = limiter
        self._tiers = tiers or {}
        self._batch_share = batch_share
        self._settling: set[asyncio.Future[None]] = set()
        self._subjects: dict[tuple[object, ...], tuple[Subject, Subject]] = {}

    async def admit(
        self,
        key: KeyRow,
        model: str,
        bound: Bound,
        request_id: str,
        *,
        user: str | None = None,
        batch: bool = False,
    ) -> Ticket:
        """Admission: the key's model access (404 / 403), rate limits (429), then ONE credit
        hold for the worst case (402). The ticket must be `conclude`d exactly once. `batch`: a
        batch line — the model's batch price, and at most `batch_share` of the key's limits."""
        return await self._admit(key, model, bound, request_id, user, batch)

    async def conclude(self, ticket: Ticket, failure: BaseException | None = None) -> None:
        """THE end of an admitted request, on every exit: `failure` (None: it ran to its end)
        sets how it ended — a cancellation is the client gone, a 4xx a refusal — then the one
        settlement runs, shielded from the caller's cancellation and tracked for `drain()`."""
        ticket.failure = failure
        if isinstance(failure, asyncio.CancelledError):
            ticket.status = "client_disconnected"
        elif failure is not None:
            ticket.status = "error"
            ticket.refused = isinstance(failure, TokenDockError) and failure.status < 500
        await self._to_the_end(self._conclude(ticket))

    def access(self, key: KeyRow, model: str) -> ModelSpec:
        """The model's spec if `key` may use it: 404 when unknown or switched off by the
        operator, 403 when outside the key's allow-list."""
        spec = self._models.check(model)
        if key.allowed_models is not None and model not in key.allowed_models:
            raise ModelNotAllowed(f"This API key may not use the model '{model}'.", param="model")
        return spec

    async def _admit(
        self, key: KeyRow, model: str, bound: Bound, request_id: str, user: str | None, batch: bool
    ) -> Ticket:
        self.access(key, model)
        price = self._models.batch_price(model) if batch else self._models.price(model)
        worst = bound.prompt_tokens + bound.completion_tokens
        if bound.rate_tokens is not None:  # a model sold by another unit than tokens
            worst = bound.rate_tokens
        # Rate limits first: a refused request reserves nothing and holds no credit.
        subjects = self.batch_subjects(key) if batch else self.subjects(key)
        rate = await self._limiter.admit(subjects, worst, request_id)
        try:
            cost = price.worst(bound.prompt_tokens, bound.completion_tokens)
            hold = await self._ledger.hold(key.account_id, key.id, cost, request_id)
        except BaseException as exc:
            await self._limiter.settle(rate, 0)
            if isinstance(exc, TokenDockError):  # a 402 still tells the client its limits
                exc.windows = (rate.requests, rate.token_window)
            raise
        return Ticket(hold, price, rate, request_id, model, user)

    def counting(self, key: KeyRow, bound: Bound, request_id: str) -> Counting:
        """`async with` it around counting a request's input tokens (nothing billed): RPM,
        TPM (the bound's prompt tokens reserved) and concurrency on entry (429 past a limit),
        and on exit the tokens `counted` (all reserved ones when the count failed) settled."""
        return Counting(self, key, bound.prompt_tokens, request_id)

    async def _conclude(self, ticket: Ticket) -> None:
        """THE settlement: exactly once per admitted request (`conclude`)."""
        tally = None if ticket.tally is None else await ticket.tally()
        untouched = tally is not None and not ticket.begun and not tally.started
        if untouched and (ticket.refused or ticket.status == "client_disconnected"):
            tally = None  # refused, or the client left, before the backend took it
        try:
            line = None
            if ticket.result is not None:
                line = ticket.result(ticket, tally)
                if line is None:  # a batch line given back (its process stops): free, again
                    tally = None
            if tally is None:  # nothing was done: release the whole hold, record nothing
                await self._ledger.settle(ticket.hold, 0, None, line)
                return
            ticket.outcome = tally
            prompt, completion = tally.prompt_tokens, tally.completion_tokens
            # What the wire shows is what was billed: a cached count past the prompt is clamped.
            cached = tally.cached_tokens = min(max(tally.cached_tokens, 0), prompt)
            now = time.monotonic()
            ticket.usage = UsageRow(
                request_id=ticket.request_id,
                model=ticket.model,
                prompt_tokens=prompt,
                completion_tokens=completion,
                status=ticket.status,
                finish_reason=tally.finish,
                latency_ms=int((now - ticket.started) * 1000),
                ttft_ms=None
                if tally.first_token is None
                else int((tally.first_token - ticket.started) * 1000),
                user=ticket.user,
                deployment=tally.deployment,
                estimated=tally.estimated,
                endpoint=ticket.endpoint,
                cached_tokens=cached,
            )
            # Usage above the hold is charged up to the balance and the key's limit (Ledger).
            cost = ticket.price.cost(prompt, completion, cached)
            ticket.settlement = await self._ledger.settle(ticket.hold, cost, ticket.usage, line)
        finally:
            if ticket.rate is not None:
                used = 0
                if tally is not None and tally.unit is None:  # other units are not tokens
                    used = tally.prompt_tokens + tally.completion_tokens
                await self._limiter.settle(ticket.rate, used)

    async def _to_the_end(self, work: Awaitable[None]) -> None:
        """Shielded, so a cancelled caller cannot cancel it, and tracked for `drain()`."""
        settling = asyncio.ensure_future(work)
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(settling)

    async def drain(self) -> None:
        """Wait for settlements still running (at shutdown)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    def subjects(self, key: KeyRow) -> tuple[Subject, Subject]:
        """Both apply: the key's limits and its account's (tier defaults, then overrides).
        Remembered per key and its limits (a changed limit is a new entry)."""
        which = (key.id, key.account_id, key.tier, key.key_limits, key.account_limits)
        subjects = self._subjects.get(which)
        if subjects is None:
            if len(self._subjects) >= MAX_REMEMBERED:
                self._subjects.clear()
            base = self._tiers.get(key.tier) or self._tiers.get("default") or Limits()
            subjects = self._subjects[which] = (
                Subject(f"key:{key.id}", base.override(*key.key_limits)),
                Subject(f"account:{key.account_id}", base.override(*key.account_limits)),
            )
        return subjects

    def batch_subjects(self, key: KeyRow) -> tuple[Subject, ...]:
        """A batch line's: the key's and its account's subjects (its work counts there like
        any request), and the key's batch subject, `batch_share` of the key's limits."""
        own, account = self.subjects(key)
        share = Subject(f"batch:{own.name}", _shared(own.limits, self._batch_share))
        return own, account, share

    def price(self, model: str) -> Price:
        return self._models.price(model)


def _shared(limits: Limits, share: float) -> Limits:
    """`share` of each limit (at least 1); 0 (no limit) stays 0."""

    def part(limit: int) -> int:
        return 0 if limit == 0 else max(1, int(limit * share))

    return Limits(part(limits.rpm), part(limits.tpm), part(limits.concurrent))

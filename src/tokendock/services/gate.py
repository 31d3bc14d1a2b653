"""Admission and settlement, shared by every way a request is served (embedded engine or
upstream): the key's model allow-list, rate limits, one atomic credit hold for the worst case,
and — exactly once, at the end — the charge for what was produced plus the rate-limit refund.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokendock import observability
from tokendock.billing.ledger import Hold, Ledger, Settlement, UsageRow
from tokendock.billing.pricing import Price
from tokendock.errors import ModelNotAllowed, ModelNotFound, TokenDockError
from tokendock.limits.base import Admission, Limiter, Limits, Subject
from tokendock.limits.base import headers as ratelimit_headers
from tokendock.services.models import ModelDirectory
from tokendock.storage.accounts import KeyRow


@dataclass(frozen=True, slots=True)
class Admitted:
    hold: Hold
    price: Price
    rate: Admission | None


class AdmittedRun:
    """For a run dataclass with an `admitted` field: its hold and rate admission."""

    __slots__ = ()
    admitted: Admitted

    @property
    def hold(self) -> Hold:
        return self.admitted.hold

    @property
    def rate(self) -> Admission | None:
        return self.admitted.rate


class Gate:
    def __init__(
        self,
        models: ModelDirectory,
        ledger: Ledger,
        limiter: Limiter,
        tiers: dict[str, Limits] | None = None,
    ):
        self._models = models
        self._ledger = ledger
        self._limiter = limiter
        self._tiers = tiers or {}

    async def admit(
        self, key: KeyRow, model: str, prompt_tokens: int, max_completion: int, request_id: str
    ) -> Admitted:
        """403 when the key may not use the model, 429 over its limits, 402 short of credit;
        otherwise the worst case (prompt + max_completion tokens) is held."""
        record = observability.current()
        if record is not None:
            record.model = model
        if not self._models.enabled(model):
            raise ModelNotFound(model)
        if key.allowed_models is not None and model not in key.allowed_models:
            raise ModelNotAllowed(f"This API key may not use the model '{model}'.", param="model")
        price = self.price(model)
        # Rate limits first: a refused request reserves nothing and holds no credit.
        rate = await self._limiter.admit(
            self.subjects(key), prompt_tokens + max_completion, request_id
        )
        try:
            worst = price.cost(prompt_tokens, max_completion)
            hold = await self._ledger.hold(key.account_id, key.id, worst, request_id)
        except BaseException as exc:
            await self._limiter.settle(rate, 0)
            if isinstance(exc, TokenDockError):  # a 402 still tells the client its limits
                exc.headers.update(ratelimit_headers(rate.requests, rate.token_window))
            raise
        return Admitted(hold, price, rate)

    async def settle(
        self, admitted: Admitted, prompt: int, completion: int, usage: UsageRow
    ) -> Settlement | None:
        """Charge what was produced (above the hold: up to the balance and the key's limit, see
        Ledger.settle), refund the rest, record usage, and give the unused token reservation
        back to the rate limiter."""
        try:
            cost = admitted.price.cost(prompt, completion)
            settlement = await self._ledger.settle(admitted.hold, cost, usage)
        finally:
            if admitted.rate is not None:
                await self._limiter.settle(admitted.rate, prompt + completion)
        record = observability.current()
        if record is not None:
            record.prompt_tokens, record.completion_tokens = prompt, completion
            record.deployment, record.estimated = usage.deployment, usage.estimated
            record.ttft_ms, record.outcome = usage.ttft_ms, usage.status
            record.cost_micro = settlement.charged if settlement is not None else None
        return settlement

    async def release(self, admitted: Admitted) -> None:
        """Nothing was produced (refused after admission, or the client left before any
        work): release the whole hold, write no usage record, return the token reservation."""
        try:
            await self._ledger.settle(admitted.hold, 0, None)
        finally:
            if admitted.rate is not None:
                await self._limiter.settle(admitted.rate, 0)

    def subjects(self, key: KeyRow) -> tuple[Subject, Subject]:
        """Both apply: the key's limits and its account's (tier defaults, then overrides)."""
        base = self._tiers.get(key.tier) or self._tiers.get("default") or Limits()
        return (
            Subject(f"key:{key.id}", base.override(*key.key_limits)),
            Subject(f"account:{key.account_id}", base.override(*key.account_limits)),
        )

    def price(self, model: str) -> Price:
        return self._models.price(model)

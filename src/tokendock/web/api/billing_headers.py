"""Cost and balance headers: every billed response says what it cost and what is left."""

from __future__ import annotations

from typing import Protocol

from tokendock.billing.ledger import Hold, Settlement
from tokendock.billing.money import format_credits
from tokendock.limits.base import Admission
from tokendock.limits.base import headers as ratelimit_headers


class Billed(Protocol):
    """An admitted request of either kind (services/completions.Run, services/proxy.ProxyRun)."""

    @property
    def hold(self) -> Hold: ...

    @property
    def rate(self) -> Admission | None: ...

    settlement: Settlement | None


def rate_headers(run: Billed) -> dict[str, str]:
    if run.rate is None:
        return {}
    return ratelimit_headers(run.rate.requests, run.rate.token_window)


def settled_headers(run: Billed) -> dict[str, str]:
    s = run.settlement
    if s is None:  # settled by someone else (cannot happen on the normal path)
        return rate_headers(run)
    return {
        **rate_headers(run),
        "x-tokendock-cost": format_credits(s.charged),
        "x-tokendock-credit-remaining": format_credits(s.balance),
    }


def hold_headers(run: Billed) -> dict[str, str]:
    """Streams send headers before the cost is known: the hold and the balance after it."""
    return {
        **rate_headers(run),
        "x-tokendock-hold": format_credits(run.hold.amount),
        "x-tokendock-credit-remaining": format_credits(run.hold.balance_after),
    }

"""Every HTTP header TokenDock derives from typed data, named and formatted in one place:
rate limits (x-ratelimit-*), when to retry (retry-after, retry-after-ms, x-should-retry), and
what a request cost (x-tokendock-*)."""

from __future__ import annotations

import math

from tokendock.billing.money import format_credits
from tokendock.errors import RateLimited, RateWindow, TokenDockError
from tokendock.services.gate import Ticket

MAX_RETRY_AFTER = 60  # whole seconds in `retry-after` on a 429; `retry-after-ms` is exact


def format_reset(seconds: float) -> str:
    """OpenAI's duration format: `120ms`, `1s`, `6m0s`."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


def rate_limits(requests: RateWindow | None, tokens: RateWindow | None) -> dict[str, str]:
    """x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the tightest subject."""
    out: dict[str, str] = {}
    for suffix, w in (("requests", requests), ("tokens", tokens)):
        if w is not None:
            out[f"x-ratelimit-limit-{suffix}"] = str(w.limit)
            out[f"x-ratelimit-remaining-{suffix}"] = str(w.remaining)
            out[f"x-ratelimit-reset-{suffix}"] = format_reset(w.reset)
    return out


def of_error(err: TokenDockError) -> dict[str, str]:
    """What an error response tells the client besides its envelope."""
    out = rate_limits(*err.windows) if err.windows is not None else {}
    wait = err.retry_after
    if wait is None:
        return out
    if math.isinf(wait):
        out["x-should-retry"] = "false"
    elif isinstance(err, RateLimited) and err.precise:
        wait = max(wait, 0.001)
        out["retry-after"] = str(min(max(math.ceil(wait), 1), MAX_RETRY_AFTER))
        out["retry-after-ms"] = str(math.ceil(wait * 1000))
    else:
        out["retry-after"] = str(max(1, round(wait)))
    return out


def of_rate(ticket: Ticket) -> dict[str, str]:
    rate = ticket.rate
    return {} if rate is None else rate_limits(rate.requests, rate.token_window)


def settled(ticket: Ticket) -> dict[str, str]:
    """What the request cost and what is left."""
    s = ticket.settlement
    if s is None:
        return of_rate(ticket)
    return {
        **of_rate(ticket),
        "x-tokendock-cost": format_credits(s.charged),
        "x-tokendock-credit-remaining": format_credits(s.balance),
    }


def held(ticket: Ticket) -> dict[str, str]:
    """Streams send headers before the cost is known: the hold and the balance after it."""
    return {
        **of_rate(ticket),
        "x-tokendock-hold": format_credits(ticket.hold.amount),
        "x-tokendock-credit-remaining": format_credits(ticket.hold.balance_after),
    }

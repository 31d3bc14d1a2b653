"""The limiter seam, and the GCRA arithmetic both backends share.

Every limit is a GCRA (generic cell rate algorithm) over a 60 s period: a limit of L per minute
has an emission interval T = 60 / L, and a subject's state is one number, its theoretical
arrival time (TAT). Admitting a cost c moves TAT to max(TAT, now) + c·T; it is allowed while
the new TAT is at most one period ahead of now. So a fresh subject may burst L at once, then
refills continuously at L per minute — exact, no fixed windows, no boundary doubling.

Tokens are reserved at admission (prompt + max_tokens × n, the credit hold's worst case) and the
unused part is handed back at settlement (TAT moves back by refund·T, never before now), so a
large max_tokens cannot burst past TPM. Concurrency is a set of in-flight request ids.

All subjects of one request (its key and its account) are checked first and committed only if
every one admits: a refused request reserves nothing anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

from tokendock.errors import RateLimited, RateWindow

PERIOD = 60.0

Kind = Literal["requests", "tokens", "concurrency"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits; 0 means unlimited."""

    rpm: int = 0
    tpm: int = 0
    concurrent: int = 0

    def override(self, rpm: int | None, tpm: int | None, concurrent: int | None) -> Limits:
        return Limits(
            self.rpm if rpm is None else rpm,
            self.tpm if tpm is None else tpm,
            self.concurrent if concurrent is None else concurrent,
        )


@dataclass(frozen=True, slots=True)
class Subject:
    name: str  # e.g. "key:12", "account:3"
    limits: Limits


Window = RateWindow  # what the x-ratelimit-* headers report (written in web/headers.py)


@dataclass(frozen=True, slots=True)
class Admission:
    ticket: str
    subjects: tuple[Subject, ...]
    tokens: int
    requests: Window | None = None
    token_window: Window | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: Kind
    subject: str
    limit: int
    retry_after: float  # seconds until this request would be admitted; inf = never
    requests: Window | None = None
    token_window: Window | None = None


class Limiter(Protocol):
    async def admit(self, subjects: tuple[Subject, ...], tokens: int, ticket: str) -> Admission:
        """Admit or raise `RateLimited` (errors.py) built from a `Refusal`."""
        ...

    async def settle(self, admission: Admission, used_tokens: int) -> None:
        """Hand back unused reserved tokens and leave the concurrency set. Once per admission."""
        ...

    async def close(self) -> None: ...


# -- GCRA arithmetic -----------------------------------------------------------------------


def interval(limit: int) -> float:
    return PERIOD / limit


def try_cost(tat: float, now: float, limit: int, cost: int) -> tuple[bool, float, float]:
    """(allowed, new_tat, retry_after) for spending `cost` units against `limit` per minute."""
    t = interval(limit)
    new_tat = max(tat, now) + cost * t
    if new_tat - now <= PERIOD + 1e-9:
        return True, new_tat, 0.0
    if cost > limit:
        return False, tat, math.inf
    return False, tat, new_tat - PERIOD - now


def window(limit: int, tat: float, now: float) -> Window:
    return Window(limit, remaining(limit, tat, now), max(tat - now, 0.0))


def remaining(limit: int, tat: float, now: float) -> int:
    """Units that could still be spent now (what x-ratelimit-remaining-* reports)."""
    ahead = max(tat - now, 0.0)
    return max(int((PERIOD - ahead + 1e-9) // interval(limit)), 0)


def tighter(a: Window | None, b: Window | None) -> Window | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.remaining <= b.remaining else b


def refused(r: Refusal) -> RateLimited:
    """The 429 for a refusal: a message naming the limit, when to retry, the windows."""
    what = {
        "requests": f"{r.limit} requests per minute",
        "tokens": f"{r.limit} tokens per minute",
        "concurrency": f"{r.limit} concurrent requests",
    }[r.kind]
    if math.isinf(r.retry_after):
        message = (
            f"Rate limit of {what} for {r.subject} can never admit this request: it needs more "
            "tokens (prompt + max_tokens × n) than the whole limit. Lower max_tokens."
        )
    else:
        wait = max(r.retry_after, 0.001)
        message = f"Rate limit reached: {what} for {r.subject}. Retry in {wait:.3f}s."
    kind = "tokens" if r.kind == "tokens" else "requests"
    return RateLimited(
        message,
        kind=kind,
        retry_after=r.retry_after,
        precise=True,
        windows=(r.requests, r.token_window),
    )

"""Throttling sign-up and log-in per client address, so that nobody can lock a person out.

Log-in attempts are limited three ways:
- per client address and email, `login_attempts_per_minute` (5): guessing one password from
  one place is slow;
- per client address, `login_attempts_per_minute_per_address` (20): one place cannot spread
  its guesses over many accounts;
- per email, `login_failures_per_hour_per_email` (100) failed attempts an hour, counted over
  all addresses, against guessing from many places — and no address counts for more than a
  tenth of it, so one address (or nine) can never use it up and lock the owner out. The owner's
  own address keeps its own per-address allowances whatever another address does.
Sign-ups are limited per client address, `signups_per_hour_per_address` (10).

The per-minute limits go through the server's rate limiter (in process, or Redis for many
replicas). The hourly caps cannot be expressed by that limiter (a GCRA whose burst is one
minute's allowance), so they count recent events in the database, which every replica shares.
Emails and addresses are stored only as digests.
"""

from __future__ import annotations

import hashlib
import math

from tokendock.config import Settings
from tokendock.errors import RateLimited
from tokendock.limits.base import Limiter, Limits, Subject
from tokendock.storage.sessions import ThrottleStore

SIGNUP = "signup"
HOUR = 3600


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _refused(message: str, seconds: int) -> RateLimited:
    return RateLimited(message, kind="requests", retry_after=seconds)


class SignInThrottle:
    def __init__(self, limiter: Limiter, store: ThrottleStore, settings: Settings):
        self._limiter = limiter
        self._store = store
        self._settings = settings

    async def login(self, address: str, email: str) -> None:
        """Admit one log-in attempt, or raise RateLimited (with retry-after)."""
        s = self._settings
        who, where = digest(email), digest(address)
        cap = s.login_failures_per_hour_per_email
        if cap:
            share = max(1, cap // 10)
            failures = sum(min(n, share) for n in await self._store.per_address("login:" + who))
            if failures >= cap:
                raise _refused(
                    "Too many failed log-ins for this account in the last hour. Try again later.",
                    HOUR,
                )
        subjects = (
            Subject(f"login:{where}:{who}", Limits(rpm=s.login_attempts_per_minute)),
            Subject(f"login-ip:{where}", Limits(rpm=s.login_attempts_per_minute_per_address)),
        )
        try:
            admission = await self._limiter.admit(subjects, 0, f"login:{where}:{who}")
        except RateLimited as exc:
            wait = math.ceil(exc.retry_after or 60)
            message = "Too many log-in attempts. Wait a minute, then try again."
            raise _refused(message, wait) from None
        await self._limiter.settle(admission, 0)

    async def failed(self, address: str, email: str) -> None:
        """Count a failed log-in toward the email's hourly cap."""
        if self._settings.login_failures_per_hour_per_email:
            await self._store.record("login:" + digest(email), digest(address))

    async def signup(self, address: str) -> None:
        """Admit one sign-up attempt from `address` (and count it), or raise RateLimited."""
        cap = self._settings.signups_per_hour_per_address
        if not cap:
            return
        where = digest(address)
        message = f"Too many sign-ups from your address (at most {cap} an hour). Try again later."
        if await self._store.count(SIGNUP, where) >= cap:  # refused: nothing is written
            raise _refused(message, HOUR)
        # Count, then check again with this attempt counted: concurrent attempts may all be
        # refused, but never more than `cap` pass.
        await self._store.record(SIGNUP, where)
        if await self._store.count(SIGNUP, where) > cap:
            raise _refused(message, HOUR)

"""The sign-in throttle: per-minute limits through the in-process limiter, hourly caps over a
store of recent events (a dict here), and no address able to use up an email's hourly cap."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tokendock.config import Settings
from tokendock.errors import RateLimited
from tokendock.limits.memory import MemoryLimiter
from tokendock.services.throttle import SignInThrottle
from tokendock.web.headers import of_error


class Events:
    """ThrottleStore's interface over a Counter (no time window: a test lasts well under one)."""

    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    async def record(self, subject: str, address: str) -> None:
        self.seen[subject, address] += 1

    async def count(self, subject: str, address: str) -> int:
        return self.seen[subject, address]

    async def per_address(self, subject: str) -> list[int]:
        return [n for (s, _), n in self.seen.items() if s == subject]


def throttle(**settings: int) -> SignInThrottle:
    return SignInThrottle(MemoryLimiter(), Events(), Settings(**settings))  # type: ignore[arg-type]


def test_guesses_from_one_address_never_lock_the_owner_out_elsewhere() -> None:
    async def run() -> None:
        t = throttle(login_attempts_per_minute=5, login_failures_per_hour_per_email=100)
        for _ in range(5):
            await t.login("10.0.0.1", "owner@example.com")
            await t.failed("10.0.0.1", "owner@example.com")
        with pytest.raises(RateLimited):
            await t.login("10.0.0.1", "owner@example.com")
        await t.login("10.0.0.2", "owner@example.com")  # the owner's own address

    asyncio.run(run())


def test_the_hourly_email_cap_needs_many_addresses_to_fill() -> None:
    async def run() -> None:
        t = throttle(login_attempts_per_minute=1000, login_failures_per_hour_per_email=20)
        for _ in range(50):  # one address counts for at most a tenth: 2 of 20
            await t.failed("10.0.0.1", "a@example.com")
        await t.login("10.0.0.9", "a@example.com")
        for i in range(2, 11):
            for _ in range(2):
                await t.failed(f"10.0.0.{i}", "a@example.com")
        with pytest.raises(RateLimited, match="in the last hour"):
            await t.login("10.0.0.99", "a@example.com")

    asyncio.run(run())


def test_sign_ups_per_address_and_zero_means_no_cap() -> None:
    async def run() -> None:
        t = throttle(signups_per_hour_per_address=2)
        await t.signup("10.0.0.1")
        await t.signup("10.0.0.1")
        with pytest.raises(RateLimited, match="at most 2 an hour") as caught:
            await t.signup("10.0.0.1")
        assert of_error(caught.value)["retry-after"] == "3600"
        await t.signup("10.0.0.2")
        free = throttle(signups_per_hour_per_address=0)
        for _ in range(50):
            await free.signup("10.0.0.1")

    asyncio.run(run())

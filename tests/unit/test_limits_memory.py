"""The in-process limiter and the GCRA arithmetic it shares with the Redis backend."""

from __future__ import annotations

import asyncio
import math

import pytest

from tokendock.errors import RateLimited
from tokendock.limits.base import (
    Limits,
    Subject,
    interval,
    try_cost,
    window,
)
from tokendock.limits.memory import MemoryLimiter
from tokendock.web.headers import format_reset, of_error


def subject(name: str = "key:1", **limits: int) -> tuple[Subject, ...]:
    return (Subject(name, Limits(**limits)),)


def test_gcra_allows_a_full_burst_then_refills_continuously() -> None:
    tat, now = 0.0, 100.0
    for _ in range(60):
        ok, tat, _ = try_cost(tat, now, 60, 1)
        assert ok
    ok, _, retry = try_cost(tat, now, 60, 1)
    assert not ok
    assert retry == pytest.approx(1.0)  # one request per second refills
    ok, _, _ = try_cost(tat, now + 1.0, 60, 1)
    assert ok


def test_cost_above_the_limit_can_never_pass() -> None:
    ok, _, retry = try_cost(0.0, 0.0, 100, 101)
    assert not ok and math.isinf(retry)


def test_window_reports_remaining_and_reset() -> None:
    now = 50.0
    tat = now + 10 * interval(60)  # 10 spent
    w = window(60, tat, now)
    assert (w.limit, w.remaining) == (60, 50)
    assert w.reset == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0ms"), (0.12, "120ms"), (1.0, "1s"), (1.5, "1.5s"), (59.25, "59.25s"), (360, "6m0s")],
)
def test_reset_format(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_exactly_rpm_admitted_out_of_500_concurrent() -> None:
    limiter = MemoryLimiter()
    subjects = subject(rpm=60)

    async def one(i: int) -> bool:
        try:
            await limiter.admit(subjects, 1, f"t{i}")
            return True
        except RateLimited:
            return False

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert results.count(True) == 60


async def test_refusal_headers_and_type() -> None:
    limiter = MemoryLimiter()
    for i in range(3):
        await limiter.admit(subject(rpm=3), 1, f"t{i}")
    with pytest.raises(RateLimited) as exc:
        await limiter.admit(subject(rpm=3), 1, "t4")
    err = exc.value
    assert err.status == 429 and err.type == "requests" and err.code == "rate_limit_exceeded"
    assert "3 requests per minute" in err.message
    h = of_error(err)
    assert 1 <= int(h["retry-after"]) <= 60
    assert 19_000 <= int(h["retry-after-ms"]) <= 20_001  # 60 s / 3 = one every 20 s
    assert h["x-ratelimit-remaining-requests"] == "0"


async def test_tokens_reserved_then_refunded() -> None:
    limiter = MemoryLimiter()
    subjects = subject(tpm=1000)
    first = await limiter.admit(subjects, 900, "a")
    assert first.token_window is not None and first.token_window.remaining == 100
    with pytest.raises(RateLimited) as exc:
        await limiter.admit(subjects, 200, "b")  # max_tokens alone exceeds what is left
    assert exc.value.type == "tokens"
    await limiter.settle(first, 50)  # used 50 of 900: 850 come back
    second = await limiter.admit(subjects, 200, "c")
    assert second.token_window is not None and second.token_window.remaining >= 700


async def test_request_larger_than_the_limit_is_told_not_to_retry() -> None:
    with pytest.raises(RateLimited) as exc:
        await MemoryLimiter().admit(subject(tpm=100), 101, "a")
    assert of_error(exc.value)["x-should-retry"] == "false"
    assert "retry-after" not in of_error(exc.value)


async def test_concurrency_slots() -> None:
    limiter = MemoryLimiter()
    subjects = subject(concurrent=2)
    a = await limiter.admit(subjects, 1, "a")
    await limiter.admit(subjects, 1, "b")
    with pytest.raises(RateLimited):
        await limiter.admit(subjects, 1, "c")
    await limiter.settle(a, 1)
    await limiter.admit(subjects, 1, "c")


async def test_all_subjects_or_nothing() -> None:
    """A refusal by the account leaves the key's allowance untouched."""
    limiter = MemoryLimiter()
    both = (Subject("key:1", Limits(rpm=10)), Subject("account:1", Limits(rpm=1)))
    await limiter.admit(both, 1, "a")
    with pytest.raises(RateLimited) as exc:
        await limiter.admit(both, 1, "b")
    assert "account:1" in exc.value.message
    key_only = (Subject("key:1", Limits(rpm=10)),)
    adm = await limiter.admit(key_only, 1, "c")
    assert adm.requests is not None and adm.requests.remaining == 8  # 2 spent, not 3


async def test_unlimited_subjects_report_no_windows() -> None:
    adm = await MemoryLimiter().admit(subject(), 10, "a")
    assert adm.requests is None and adm.token_window is None


async def test_override_keeps_tier_defaults() -> None:
    base = Limits(rpm=60, tpm=1000, concurrent=4)
    assert base.override(None, 5, None) == Limits(60, 5, 4)
    assert base.override(0, None, None).rpm == 0

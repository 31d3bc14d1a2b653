"""The Redis limiter against a real Redis server (TOKENDOCK_TEST_REDIS_URL; .ci/run starts one)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import pytest

from tokendock.errors import RateLimited, ServiceUnavailable
from tokendock.limits.base import Limits, Subject
from tokendock.limits.redis import RedisLimiter
from tokendock.web.headers import of_error

REDIS_URL = os.environ.get("TOKENDOCK_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(not REDIS_URL, reason="TOKENDOCK_TEST_REDIS_URL is not set")


def limiter(prefix: str, **kwargs: bool) -> RedisLimiter:
    assert REDIS_URL
    return RedisLimiter(REDIS_URL, prefix=prefix, **kwargs)


def fresh_prefix() -> str:
    return f"td:test:{secrets.token_hex(4)}:"


async def _count_admitted(
    limiters: list[RedisLimiter], subjects: tuple[Subject, ...], n: int
) -> int:
    async def one(i: int) -> bool:
        try:
            await limiters[i % len(limiters)].admit(subjects, 1, f"t{i}")
            return True
        except RateLimited:
            return False

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def test_exactly_rpm_of_500_concurrent() -> None:
    lim = limiter(fresh_prefix())
    try:
        subjects = (Subject("key:1", Limits(rpm=60)),)
        assert await _count_admitted([lim], subjects, 500) == 60
    finally:
        await lim.close()


async def test_two_limiters_share_one_budget() -> None:
    """Two processes' worth of limiters (separate connections) never admit more than the limit."""
    prefix = fresh_prefix()
    a, b = limiter(prefix), limiter(prefix)
    try:
        subjects = (Subject("key:1", Limits(rpm=60)), Subject("account:1", Limits(rpm=100)))
        assert await _count_admitted([a, b], subjects, 500) == 60
    finally:
        await a.close()
        await b.close()


async def test_tokens_reserved_and_refunded() -> None:
    lim = limiter(fresh_prefix())
    try:
        subjects = (Subject("key:1", Limits(tpm=1000)),)
        first = await lim.admit(subjects, 900, "a")
        assert first.token_window is not None and first.token_window.remaining == 100
        with pytest.raises(RateLimited) as exc:
            await lim.admit(subjects, 200, "b")
        assert exc.value.type == "tokens"
        assert 0 < int(of_error(exc.value)["retry-after-ms"]) <= 60_000
        await lim.settle(first, 100)
        second = await lim.admit(subjects, 200, "c")
        assert second.token_window is not None and second.token_window.remaining >= 600
    finally:
        await lim.close()


async def test_concurrency_and_release() -> None:
    lim = limiter(fresh_prefix())
    try:
        subjects = (Subject("key:1", Limits(concurrent=1)),)
        first = await lim.admit(subjects, 1, "a")
        with pytest.raises(RateLimited):
            await lim.admit(subjects, 1, "b")
        await lim.settle(first, 1)
        await lim.admit(subjects, 1, "b")
    finally:
        await lim.close()


async def test_refusal_by_account_reserves_nothing_for_the_key() -> None:
    lim = limiter(fresh_prefix())
    try:
        both = (Subject("key:1", Limits(rpm=10)), Subject("account:1", Limits(rpm=1)))
        await lim.admit(both, 1, "a")
        with pytest.raises(RateLimited):
            await lim.admit(both, 1, "b")
        adm = await lim.admit((Subject("key:1", Limits(rpm=10)),), 1, "c")
        assert adm.requests is not None and adm.requests.remaining == 8
    finally:
        await lim.close()


async def test_unreachable_redis_fails_closed_by_default() -> None:
    lim = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(ServiceUnavailable) as exc:
            await lim.admit((Subject("key:1", Limits(rpm=5)),), 1, "a")
        assert exc.value.status == 503
    finally:
        await lim.close()


async def test_unreachable_redis_can_fail_open_loudly(caplog: pytest.LogCaptureFixture) -> None:
    lim = RedisLimiter("redis://127.0.0.1:1/0", fail_open=True)
    try:
        with caplog.at_level(logging.ERROR):
            adm = await lim.admit((Subject("key:1", Limits(rpm=5)),), 1, "a")
        assert adm.subjects == ()
        assert "ADMITTING WITHOUT LIMITS" in caplog.text
    finally:
        await lim.close()

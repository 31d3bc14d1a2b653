"""The embedded engine's wait bounds without a model: the global bound and the per-account
bound (one account over its own gets a 503, others do not), a request that could never be
queued is a 400 naming `n`, and a cancelled job leaves the queue at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tokendock.catalog import ModelSpec
from tokendock.errors import InvalidRequest, ServiceUnavailable
from tokendock.inference.engine.base import Generation
from tokendock.inference.engine.embedded import check_choices
from tokendock.inference.engine.inbox import Inbox
from tokendock.inference.engine.job import Job
from tokendock.inference.engine.llama import LlamaEngine


def engine(slots: int = 2, max_queue: int = 16, per_account: int | None = None) -> LlamaEngine:
    spec = ModelSpec(
        id="m",
        path=Path("/nowhere.gguf"),
        slots=slots,
        max_queue=max_queue,
        max_queue_per_account=per_account,
    )
    return LlamaEngine(spec, Path("/nowhere"))


def queue(eng: LlamaEngine, owner: str, count: int) -> list[Job]:
    inbox = Inbox(asyncio.get_running_loop())
    jobs = [Job(Generation([1, 2], 4, owner=owner), inbox, i) for i in range(count)]
    for job in jobs:
        assert eng._jobs.put(owner, job)
    return jobs


async def test_one_account_over_its_bound_is_refused_alone() -> None:
    eng = engine(slots=2, max_queue=16, per_account=4)
    queue(eng, "account:1", 4)  # no slot is running: 2 free slots, so 2 of these "wait"
    eng.check_queue(2, "account:1")  # 4 + 2 - 2 = 4: at the bound, not over it
    with pytest.raises(ServiceUnavailable) as refused:
        eng.check_queue(3, "account:1")
    assert refused.value.code == "engine_overloaded" and refused.value.status == 503
    assert (refused.value.retry_after or 0) >= 1
    assert "account" in refused.value.message
    eng.check_queue(6, "account:2")  # another account is still served


async def test_the_global_bound_still_holds() -> None:
    eng = engine(slots=1, max_queue=8, per_account=8)
    queue(eng, "account:1", 5)
    queue(eng, "account:2", 4)
    with pytest.raises(ServiceUnavailable) as refused:
        eng.check_queue(1, "account:3")
    assert "too many requests waiting" in refused.value.message


async def test_a_cancelled_job_stops_counting_at_once() -> None:
    eng = engine(slots=1, max_queue=16, per_account=2)
    jobs = queue(eng, "account:1", 3)
    with pytest.raises(ServiceUnavailable):
        eng.check_queue(1, "account:1")
    for job in jobs:
        eng.cancel(job)  # no worker needed: the queue entry goes now
    assert len(eng._jobs) == 0 and eng._jobs.count("account:1") == 0
    assert all(job.gen.meter.done.is_set() for job in jobs)  # never started: nothing to bill
    eng.check_queue(3, "account:1")


def test_more_choices_than_could_ever_queue_is_a_400_naming_n() -> None:
    spec = ModelSpec(id="m", path=Path("/m.gguf"), slots=8, max_queue=256)  # 64 per account
    check_choices(spec, 72, 72)
    with pytest.raises(InvalidRequest) as refused:
        check_choices(spec, 73, 73)
    assert refused.value.param == "n" and refused.value.status == 400
    with pytest.raises(InvalidRequest):
        check_choices(spec, 80, 40)  # 2 prompts × n = 40

"""billing/settling.py: a settlement is made again — never left for the sweep — when the
database refused the usage row (without its free text) or the connection failed (as it was);
any other failure is raised. Against a scripted fast path: no database."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from tokendock.billing import fastpath, settling
from tokendock.billing.records import Hold, Settled, UsageRow

HOLD = Hold("hold_1", 1, 2, 1_000, 5_000, "req_1")
USAGE = UsageRow("req_1", "m", 10, 5, "ok", "stop", 12, 3, "alice", "gpu", False, "responses")
AT = datetime(2026, 1, 1, tzinfo=UTC)


class SqlState(Exception):
    """What asyncpg raises: an exception with the SQLSTATE in `sqlstate`."""

    def __init__(self, sqlstate: str):
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


class Scripted:
    """A fast path whose settle fails with each of `failures` in turn, then succeeds."""

    def __init__(self, *failures: Exception):
        self.failures = list(failures)
        self.rows: list[UsageRow | None] = []

    async def settle(self, *args: Any) -> Settled | None:
        self.rows.append(args[6])
        if self.failures:
            raise self.failures.pop(0)
        return args[4], 4_000, False


async def run(fast: Scripted, usage: UsageRow | None = USAGE) -> Settled | None:
    return await settling.settle(fast, HOLD, 700, usage, AT)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settling, "RETRY_PAUSE", 0)


@pytest.mark.parametrize(
    "refusal",
    [
        SqlState("22021"),
        SqlState("22001"),
        SqlState("22000"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"),
    ],
)
async def test_a_refused_row_is_settled_again_without_its_free_text(refusal: Exception) -> None:
    fast = Scripted(refusal)
    assert await run(fast) == (700, 4_000, False)
    first, second = fast.rows
    assert first == USAGE
    assert second is not None and second.request_id == "req_1" and second.prompt_tokens == 10
    assert (second.user, second.finish_reason, second.deployment, second.endpoint) == (None,) * 4


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionResetError("reset"),
        TimeoutError(),
        sqlite3.OperationalError("locked"),
        SqlState("08006"),
        SqlState("40P01"),
    ],
)
async def test_a_connection_failure_is_settled_again_as_it_was(failure: Exception) -> None:
    fast = Scripted(failure)
    assert await run(fast) == (700, 4_000, False)
    assert fast.rows == [USAGE, USAGE]


async def test_a_release_is_tried_again_too() -> None:
    fast = Scripted(ConnectionResetError("reset"))
    assert await run(fast, None) == (700, 4_000, False)
    assert fast.rows == [None, None]


@pytest.mark.parametrize("failure", [RuntimeError("a bug"), SqlState("23505"), LookupError()])
async def test_anything_else_is_raised_after_one_try(failure: Exception) -> None:
    fast = Scripted(failure)
    with pytest.raises(type(failure)):
        await run(fast)
    assert len(fast.rows) == 1


async def test_only_one_retry() -> None:
    fast = Scripted(SqlState("22021"), SqlState("22021"))
    with pytest.raises(SqlState):
        await run(fast)
    assert len(fast.rows) == 2


def test_the_classes() -> None:
    assert fastpath.refused_data(SqlState("22P05")) and not fastpath.refused_data(SqlState("08006"))
    assert fastpath.transient(SqlState("57P01")) and not fastpath.transient(SqlState("22001"))

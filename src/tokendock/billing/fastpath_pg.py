"""PostgreSQL hot path: `td_hold` / `td_settle` (storage/ledger_plpgsql.py), one round trip each.

Each call is one autocommit transaction executed by a plpgsql function holding the ledger's
statements: the conditional debit, the guarded `UPDATE holds … WHERE status = 'open'`, the
append-only entries. The functions report refusals as values (see `records.HELD` …).

The asyncpg pool is this module's own (not SQLAlchemy's), created on first use from the
engine's URL and closed by `close()`. Connections are not reset on release (asyncpg's default
costs a round trip per call): these functions leave no session state behind.

A caller cancelled mid-call must not leave an unknown outcome behind: the call is shielded,
finishes anyway, and a hold it made is released at once (settled at 0, like a crash).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from tokendock.billing.records import HELD, LineResult, Settled, UsageRow
from tokendock.storage import batch_sql
from tokendock.storage.ledger_sql import PG_HOLD, PG_RENEW, PG_SETTLE

log = logging.getLogger(__name__)

POOL_MAX = 16  # the server has two CPUs' worth of work to give; more connections only queue


async def _no_reset(_conn: Any) -> None:
    return None


class PgFastPath:
    def __init__(self, dsn: str):
        self._dsn = dsn
        self._pool: Any = None  # asyncpg.Pool, created on first use (in the caller's loop)
        self._opening: asyncio.Lock | None = None
        self._closed = False
        self._background: set[asyncio.Task[Any]] = set()

    async def hold(
        self,
        hold_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        request_id: str,
        owner: str,
        at: datetime,
        expires_at: datetime,
    ) -> tuple[int, int]:
        pool = self._pool or await self._open()
        call = asyncio.ensure_future(
            pool.fetchrow(
                PG_HOLD, hold_id, account_id, key_id, amount, request_id, owner, at, expires_at
            )
        )
        try:
            row = await asyncio.shield(call)
        except asyncio.CancelledError:

            def release(done: asyncio.Future[Any]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return
                if done.result()[0] == HELD:
                    self._spawn(self.settle(hold_id, account_id, key_id, amount, 0, at, None))

            call.add_done_callback(release)
            raise
        return int(row[0]), int(row[1])

    async def settle(
        self,
        hold_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        charge: int,
        at: datetime,
        usage: UsageRow | None,
        swept: bool = False,
        fence: LineResult | None = None,
    ) -> Settled | None:
        pool = self._pool or await self._open()
        u = usage
        args = (
            hold_id,
            account_id,
            key_id,
            amount,
            charge,
            at,
            swept,
            u is not None,
            u and u.request_id,
            u and u.model,
            u and u.prompt_tokens,
            u and u.completion_tokens,
            u and u.status,
            u and u.finish_reason,
            u and u.latency_ms,
            u and u.ttft_ms,
            u and u.user,
            u and u.deployment,
            u is not None and u.estimated,
            u and u.endpoint,
            u and u.cached_tokens,
        )
        if fence is not None:
            return await asyncio.shield(self._settle_line(pool, args, fence))
        # Shielded: a settlement that reached the server completes even if its caller is gone.
        row = await asyncio.shield(pool.fetchrow(PG_SETTLE, *args))
        return _settled(row)

    @staticmethod
    async def _settle_line(pool: Any, args: tuple[Any, ...], fence: LineResult) -> Settled | None:
        """td_settle and the line's fenced result in one transaction (storage/batch_sql.py)."""
        line = (fence.batch_id, fence.line)
        async with pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                batch_sql.PG_FENCE, fence.outcome, fence.result, *line, fence.lease
            )
            if status != "UPDATE 1":
                fence.won = False
                return None
            settled = _settled(await conn.fetchrow(PG_SETTLE, *args))
            charged = 0 if settled is None else settled[0]
            if charged:
                await conn.execute(batch_sql.PG_COST, charged, *line)
            ok = fence.outcome == "succeeded"
            await conn.execute(batch_sql.PG_COUNT, int(ok), int(not ok), charged, fence.batch_id)
        fence.won, fence.charged = True, charged
        return settled

    async def renew(self, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
        pool = self._pool or await self._open()
        status: str = await pool.execute(PG_RENEW, expires_at, owner, hold_ids)  # "UPDATE <n>"
        return int(status.rpartition(" ")[2])

    async def close(self) -> None:
        self._closed = True
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _open(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._closed:
            raise RuntimeError("the ledger is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=1, max_size=POOL_MAX, reset=_no_reset
                )
        return self._pool

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("releasing an orphaned hold failed", exc_info=t.exception())

        task.add_done_callback(done)


def _settled(row: Any) -> Settled | None:
    if row is None or row[1] is None:
        return None
    return int(row[0]), int(row[1]), bool(row[2])

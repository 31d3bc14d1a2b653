"""The ledger's hot path: `hold` and `settle` as ONE database call each, per backend.

A request holds and settles once each, so these two transactions decide the throughput of the
whole service. Going through SQLAlchemy's async engine costs one event-loop round trip per
statement (18–24 per transaction on SQLite, 6–8 on PostgreSQL) and several ms of Python per
request; see the "Money path" section of docs/benchmarks.md. So each backend runs the whole
transaction in one call, with the same statements and guards as the ledger's docstring states:

- SQLite (`fastpath_sqlite`): one writer thread owning a plain `sqlite3` connection runs each
  transaction as one job (several queued jobs share one COMMIT, each in its own SAVEPOINT).
- PostgreSQL (`fastpath_pg`): plpgsql functions `td_hold` / `td_settle` (migration 0003) called
  through an asyncpg pool; each is one round trip and one autocommit transaction.

Refusals (no credit, spend limit, already settled) come back as values, not exceptions: they
are part of the normal flow and cheaper that way. `Ledger` turns them into its exceptions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from tokendock.billing.ledger import UsageRow

# Outcome of a hold: (HELD, balance after) or (NO_CREDIT, balance now) or (OVER_LIMIT, 0).
HELD = 0
NO_CREDIT = 1
OVER_LIMIT = 2


class FastPath(Protocol):
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
        """Debit the account, reserve against the key's spend limit, insert the hold and its
        entry, in one transaction; (outcome, balance). A refusal changes nothing."""
        ...

    async def settle(
        self,
        hold_id: str,
        account_id: int,
        key_id: int | None,
        charge: int,
        refund: int,
        at: datetime,
        usage: UsageRow | None,
    ) -> int | None:
        """Close the open hold, refund, write capture/release entries and the usage row, in one
        transaction: the balance after, or None when the hold was not open (nothing changed)."""
        ...

    async def close(self) -> None: ...


def for_engine(engine: AsyncEngine, quiet: Callable[[], bool] | None = None) -> FastPath:
    """The hot path for the database behind `engine` (the same database, its own connections).
    `quiet()` tells SQLite's writer whether the process is calm enough to run a job inline."""
    name = engine.dialect.name
    if name == "sqlite":
        from tokendock.billing.fastpath_sqlite import SqliteWriter
        from tokendock.storage.db import sqlite_path

        return SqliteWriter(sqlite_path(engine), quiet)
    if name == "postgresql":
        from tokendock.billing.fastpath_pg import PgFastPath
        from tokendock.storage.db import asyncpg_dsn

        return PgFastPath(asyncpg_dsn(engine))
    raise ValueError(f"the ledger supports SQLite and PostgreSQL, not {name}")

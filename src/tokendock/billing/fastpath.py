"""The ledger's hot path: `hold` and `settle` as ONE database call each, per backend.

A request holds and settles once each, so these two transactions decide the throughput of the
whole service. Going through SQLAlchemy's async engine costs one event-loop round trip per
statement (18–24 per transaction on SQLite, 6–8 on PostgreSQL) and several ms of Python per
request; see the "Money path" section of docs/benchmarks.md. So each backend runs the whole
transaction in one call, with the same statements and guards as the ledger's docstring states:

- SQLite (`fastpath_sqlite`): one writer thread owning a plain `sqlite3` connection runs each
  transaction as one job (several queued jobs share one COMMIT).
- PostgreSQL (`fastpath_pg`): plpgsql functions `td_hold` / `td_settle` (their texts in
  storage/ledger_plpgsql.py, installed by migrations 0003 and 0008) called through an asyncpg
  pool; each is one round trip and one autocommit transaction.

Both run the statements of storage/ledger_sql.py. The values they return are in
billing/records.py (a leaf: no fast path imports the ledger).

`renew` (every third of the hold TTL, not per request) is one UPDATE of this process's open holds.

Refusals (no credit, spend limit, already settled) come back as values, not exceptions: they
are part of the normal flow and cheaper that way. `Ledger` turns them into its exceptions.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.billing.load import Load
from tokendock.billing.records import LineResult, Settled, UsageRow


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
        amount: int,
        charge: int,
        at: datetime,
        usage: UsageRow | None,
        swept: bool = False,
        fence: LineResult | None = None,
    ) -> Settled | None:
        """In one transaction: close the open hold of `amount` (as SWEPT when `swept`), capture
        min(charge, amount), refund the rest; a charge above the hold debits the excess up to
        the balance and the key's spend limit (an `overage` entry). A hold found SWEPT is
        charged `charge` the same way as a plain `late` debit, once. Writes the usage row with
        what was charged. None when the hold was settled already (nothing changed).
        `fence`: a batch line's result, written first in the same transaction and only while
        the line's claim holds (else nothing at all is written: `fence.won` is False)."""
        ...

    async def renew(self, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
        """Move `expires_at` of those of `hold_ids` that are open and `owner`'s forward, in one
        statement; how many."""
        ...

    async def close(self) -> None: ...


def refused_data(exc: Exception) -> bool:
    """Did the database refuse a value, rather than fail? SQLSTATE class 22 on PostgreSQL
    (asyncpg's DataError: a NUL, a string too long, a number out of range; asyncpg also
    raises it for an argument it cannot encode), or a string SQLite's driver cannot encode.
    The transaction rolled back whole: the ledger may settle again without the bad value."""
    if isinstance(exc, UnicodeError | sqlite3.DataError):
        return True
    return str(getattr(exc, "sqlstate", "") or "").startswith("22")


def transient(exc: Exception) -> bool:
    """A failure that trying again may cure: the connection (OSError, SQLSTATE class 08 or
    asyncpg's InterfaceError), a serialization failure or deadlock (40), resources (53), an
    operator's intervention (57), SQLite's lock. Settling again is safe: exactly once holds."""
    if isinstance(exc, OSError | TimeoutError | sqlite3.OperationalError):
        return True
    if type(exc).__name__ == "InterfaceError":  # asyncpg: the connection was lost or closed
        return True
    return str(getattr(exc, "sqlstate", "") or "")[:2] in ("08", "40", "53", "57")


def for_engine(engine: AsyncEngine, load: Load | None = None) -> FastPath:
    """The hot path for the database behind `engine` (the same database, its own connections).
    `load.quiet()` tells SQLite's writer whether the process is calm enough to run a job
    inline (always, when None)."""
    name = engine.dialect.name
    if name == "sqlite":
        from tokendock.billing.fastpath_sqlite import SqliteWriter
        from tokendock.storage.db import sqlite_path

        return SqliteWriter(sqlite_path(engine), load)
    if name == "postgresql":
        from tokendock.billing.fastpath_pg import PgFastPath
        from tokendock.storage.db import asyncpg_dsn

        return PgFastPath(asyncpg_dsn(engine))
    raise ValueError(f"the ledger supports SQLite and PostgreSQL, not {name}")

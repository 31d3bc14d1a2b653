"""The database handle: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, pool_size=8, max_overflow=8)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" hook below issue BEGIN, not the driver.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                cur.execute(pragma)
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            # Take the write lock at BEGIN, so two writers never deadlock on lock upgrade —
            # except on `reader(engine)`, whose reads see a WAL snapshot and never wait.
            if conn.get_execution_options().get(READ_ONLY):
                conn.exec_driver_sql("BEGIN")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_async_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)


READ_ONLY = "tokendock_read_only"


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool for statements that only read: on SQLite their transactions
    begin DEFERRED, so they never queue behind the ledger's writer for the write lock."""
    return engine.execution_options(**{READ_ONLY: True})


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


# SQLite connection settings, shared by the engine above and the ledger's own writer thread.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)
# How SQLAlchemy's SQLite DateTime stores a value (the fields as given, no zone): raw SQL
# writing the same tables must use the same text, or string comparisons break.
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def sqlite_path(engine: AsyncEngine) -> str:
    """The file behind a SQLite engine, for connections opened outside SQLAlchemy."""
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ValueError("the ledger needs a SQLite database file, not an in-memory database")
    return path


def asyncpg_dsn(engine: AsyncEngine) -> str:
    """A plain asyncpg DSN (postgresql://…) for the database behind a PostgreSQL engine."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

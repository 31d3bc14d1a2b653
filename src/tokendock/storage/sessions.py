"""Queries for live dashboard sessions and for the sign-up / log-in throttle's recent events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.accounts import AccountRow, account_row
from tokendock.storage.db import reader
from tokendock.storage.tables import accounts, dashboard_sessions, throttle_events


class SessionStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def start(self, digest: str, account_id: int, expires_at: datetime) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            # Expired rows go whenever a session starts: the table holds live sessions only.
            await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.expires_at < now)
            )
            await conn.execute(
                insert(dashboard_sessions).values(
                    digest=digest, account_id=account_id, created_at=now, expires_at=expires_at
                )
            )

    async def account(self, account_id: int, digest: str) -> AccountRow | None:
        """The account of a live session: its row exists, is the account's and has not expired."""
        query = (
            select(accounts)
            .join(dashboard_sessions, dashboard_sessions.c.account_id == accounts.c.id)
            .where(
                dashboard_sessions.c.digest == digest,
                accounts.c.id == account_id,
                dashboard_sessions.c.expires_at > datetime.now(UTC),
            )
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else account_row(row)

    async def end(self, digest: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.digest == digest)
            )

    async def end_all(self, account_id: int) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
            )
            return int(result.rowcount)

    async def live(self, account_id: int) -> int:
        query = select(func.count()).where(
            dashboard_sessions.c.account_id == account_id,
            dashboard_sessions.c.expires_at > datetime.now(UTC),
        )
        async with self._reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())


class ThrottleStore:
    """Events (a subject, a client address, a time) kept for `window`; both are digests."""

    def __init__(self, engine: AsyncEngine, *, window: timedelta = timedelta(hours=1)):
        self._engine = engine
        self._reader = reader(engine)
        self._window = window

    async def record(self, subject: str, address: str) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(
                delete(throttle_events).where(throttle_events.c.at < now - self._window)
            )
            await conn.execute(
                insert(throttle_events).values(subject=subject, address=address, at=now)
            )

    async def count(self, subject: str, address: str) -> int:
        """Events of `subject` from `address` within the window."""
        query = select(func.count()).where(
            throttle_events.c.subject == subject,
            throttle_events.c.address == address,
            throttle_events.c.at >= datetime.now(UTC) - self._window,
        )
        async with self._reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def per_address(self, subject: str) -> list[int]:
        """Events of `subject` within the window: one count per address."""
        query = (
            select(func.count())
            .where(
                throttle_events.c.subject == subject,
                throttle_events.c.at >= datetime.now(UTC) - self._window,
            )
            .group_by(throttle_events.c.address)
        )
        async with self._reader.connect() as conn:
            return [int(n) for n in (await conn.execute(query)).scalars().all()]

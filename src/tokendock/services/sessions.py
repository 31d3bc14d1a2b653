"""Dashboard sessions that can be ended.

A session is live while its row exists, has not expired and its account is not disabled; the
signed cookie only names it. Log-out ends that one session; changing the password, an
administrator disabling the account, and "sign out everywhere" (the account's own or an
administrator's) end every session of the account. Every check reads the database (one indexed
join, no cache), so an ended session is refused at once by every replica, on SQLite and
PostgreSQL alike.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tokendock.security.sessions import Session
from tokendock.storage.accounts import AccountRow
from tokendock.storage.sessions import SessionStore


class SessionBook:
    def __init__(self, store: SessionStore):
        self._store = store

    async def start(self, account_id: int, lifetime: float) -> Session:
        """A new live session (and CSRF token) for a visitor who just proved who they are."""
        session = Session.new(account_id)
        expires = datetime.now(UTC) + timedelta(seconds=lifetime)
        await self._store.start(session.digest, account_id, expires)
        return session

    async def account(self, session: Session) -> AccountRow | None:
        """The signed-in account, or None when the session is anonymous, ended or expired, or
        its account is disabled."""
        if not session.account_id or not session.sid:
            return None
        account = await self._store.account(session.account_id, session.digest)
        return None if account is None or account.disabled else account

    async def end(self, session: Session) -> None:
        if session.sid:
            await self._store.end(session.digest)

    async def end_all(self, account_id: int) -> int:
        """End every session of the account; how many there were."""
        return await self._store.end_all(account_id)

    async def live(self, account_id: int) -> int:
        return await self._store.live(account_id)

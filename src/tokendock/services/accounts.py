"""Accounts, API keys, credits and redemption: the use cases behind the CLI and /v1 auth.

Key lookups are cached in memory for `cache_seconds` (default 1 s): the hot path does not touch
the database on every request. Revoking a key or disabling an account writes an access event in
the same transaction; every replica reads those within a second (services/access.py), drops
its key cache and ends the running work of that key or account. `changed` wakes this process's
reader at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from tokendock.billing.ledger import Ledger
from tokendock.billing.money import MAX_AMOUNT, format_credits
from tokendock.errors import InvalidAPIKey, InvalidRequest, NotFound, Unauthorized
from tokendock.security import keys
from tokendock.security.passwords import hash_password, verify_password
from tokendock.services.sessions import SessionBook
from tokendock.storage.accounts import AccountRow, AccountStore, KeyRow
from tokendock.storage.sessions import SessionStore, ThrottleStore


@dataclass(frozen=True, slots=True)
class NewKey:
    id: int
    secret: str  # shown once; only its digest is stored


PLAYGROUND = "Playground"
MAX_EMAIL = 254  # RFC 5321's longest usable address; checked before anything is stored
MAX_KEY_NAME = 200  # api_keys.name
MAX_PASSWORD = 256  # argon2 hashes whatever it is given: a megabyte costs real CPU


def too_long(email: str, password: str) -> str | None:
    """Why an email or password is refused before any work, or None."""
    if len(email) > MAX_EMAIL:
        return f"Use an email address of at most {MAX_EMAIL} characters."
    if len(password) > MAX_PASSWORD:
        return f"Use a password of at most {MAX_PASSWORD} characters."
    return None


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        ledger: Ledger,
        *,
        cache_seconds: float = 1.0,
        changed: Callable[[], None] | None = None,
    ):
        self.store = store
        self.ledger = ledger
        self._changed = changed
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, KeyRow | None]] = {}
        self._lookups: dict[str, asyncio.Future[KeyRow | None]] = {}
        self.sessions = SessionBook(SessionStore(store.engine))
        self.throttle_events = ThrottleStore(store.engine)

    async def create_account(
        self, email: str, password: str, *, is_admin: bool = False, grant: int = 0
    ) -> int:
        email = email.strip().lower()
        problem = too_long(email, password)
        if problem is not None:
            raise InvalidRequest(problem, param="email" if len(email) > MAX_EMAIL else "password")
        if "@" not in email:
            raise InvalidRequest(f"'{email}' is not an email address.", param="email")
        try:
            digest = await asyncio.to_thread(hash_password, password)
            account_id = await self.store.create_account(email, digest, is_admin)
        except IntegrityError:
            raise InvalidRequest(f"An account for {email} already exists.", param="email") from None
        if grant:
            await self.ledger.credit(
                account_id,
                grant,
                kind="grant",
                idempotency_key=f"signup:{account_id}",
                reference="starting grant",
            )
        return account_id

    async def login(self, email: str, password: str) -> AccountRow | None:
        """The account, or None — the same answer, after the same work, whether the email is
        unknown, the password wrong or the account disabled (argon2 runs off the event loop)."""
        if too_long(email.strip(), password) is not None:
            return None  # refused before any work; says nothing about the account
        account = await self.store.account_by_email(email.strip().lower())
        stored = account.password_hash if account is not None else None
        ok = await asyncio.to_thread(verify_password, stored, password)
        if not ok or account is None or account.disabled:
            return None
        return account

    async def change_password(self, account_id: int, current: str, new: str) -> bool:
        """Set a new password if `current` is right (False if not), and end every session of
        the account: whoever knew the old password is signed out everywhere."""
        account = await self.store.account_by_id(account_id)
        stored = account.password_hash if account is not None else None
        if too_long("", current) is not None or too_long("", new) is not None:
            return False
        if account is None or not await asyncio.to_thread(verify_password, stored, current):
            return False
        await self.store.set_password(account_id, await asyncio.to_thread(hash_password, new))
        await self.sessions.end_all(account_id)
        return True

    async def account_id(self, email: str) -> int:
        account = await self.store.account_by_email(email.strip().lower())
        if account is None:
            raise NotFound(f"No account for {email}.")
        return account.id

    async def create_key(
        self,
        account_id: int,
        name: str,
        *,
        expires_at: datetime | None = None,
        spend_limit: int | None = None,
        models: Sequence[str] | None = None,
    ) -> NewKey:
        if not 1 <= len(name) <= MAX_KEY_NAME:
            raise InvalidRequest(f"A key's name has 1 to {MAX_KEY_NAME} characters.", param="name")
        secret = keys.mint_key()
        key_id = await self.store.create_key(
            account_id,
            name=name,
            digest=keys.digest(secret),
            prefix=keys.display_prefix(secret),
            last4=keys.last4(secret),
            expires_at=expires_at,
            spend_limit=spend_limit,
            allowed_models=models,
        )
        return NewKey(key_id, secret)

    async def revoke_key(self, account_id: int, key_id: int) -> None:
        """The key stops working, and its running requests end, on every replica."""
        if not await self.store.revoke_key(account_id, key_id):
            raise NotFound(f"No live API key {key_id} on this account.")
        self._access_changed()

    async def set_disabled(self, account_id: int, disabled: bool) -> bool:
        """Disable (or enable) an account; False when there is none. Disabled, its keys stop
        working and its running requests end, on every replica."""
        found = await self.store.set_disabled(account_id, disabled)
        if found:
            self._access_changed()
        return found

    def _access_changed(self) -> None:
        self.forget_keys()
        if self._changed is not None:
            self._changed()

    async def playground_key(self, account_id: int) -> KeyRow:
        """The account's "Playground" key, made on first use: the dashboard's playground calls
        /v1/chat/completions with it, so those requests are limited, billed and listed like any
        other. Its secret is never kept or shown; revoking it makes a new one next time."""
        for key in await self.store.list_keys(account_id):
            if key.name == PLAYGROUND and key.revoked_at is None:
                found = await self.store.key_by_id(account_id, key.id)
                if found is not None:
                    return found
        new = await self.create_key(account_id, PLAYGROUND)
        found = await self.store.key_by_id(account_id, new.id)
        assert found is not None
        return found

    def forget_keys(self) -> None:
        """Drop this process's key cache (after a revocation or an account was disabled)."""
        self._cache.clear()

    async def authenticate(self, authorization: str | None) -> KeyRow:
        """The key behind an `Authorization: Bearer …` header, or 401."""
        if not authorization:
            raise Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer td-…'."
            )
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("Malformed Authorization header; expected 'Bearer <api key>'.")
        digest = keys.digest(secret)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            key = cached[1]
        else:
            key = await self._lookup(digest)
        if key is None or key.revoked_at is not None or key.account_disabled:
            raise InvalidAPIKey(f"Incorrect API key provided: {keys.redact(secret)}.")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise InvalidAPIKey(f"The API key {keys.redact(secret)} has expired.")
        return key

    async def _lookup(self, digest: str) -> KeyRow | None:
        """One database lookup per key at a time: concurrent requests with a stale entry share
        it (shielded, so a caller that goes away does not cancel it for the others)."""
        pending = self._lookups.get(digest)
        if pending is None:
            at = time.monotonic()
            pending = asyncio.ensure_future(self.store.key_by_digest(digest))
            self._lookups[digest] = pending

            def remember(task: asyncio.Future[KeyRow | None]) -> None:
                self._lookups.pop(digest, None)
                if not task.cancelled() and task.exception() is None:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[digest] = (at + self._cache_seconds, task.result())

            pending.add_done_callback(remember)
        return await asyncio.shield(pending)

    async def redeem(self, account_id: int, code: str) -> int:
        amount = await self.ledger.redeem(keys.digest(code.strip()), account_id)
        if amount is None:
            raise InvalidRequest("This code is unknown or has already been redeemed.", param="code")
        return amount

    async def create_codes(self, amount: int, count: int) -> list[str]:
        if not 0 < amount <= MAX_AMOUNT:
            raise InvalidRequest(
                f"A code is worth more than 0 and at most {format_credits(MAX_AMOUNT)} credits.",
                param="amount",
            )
        codes = []
        for _ in range(count):
            code = keys.mint_code()
            await self.store.create_code(keys.digest(code), keys.last4(code), amount)
            codes.append(code)
        return codes

    async def bootstrap(self, email: str, password: str, grant: int) -> NewKey | None:
        """On an empty database: an admin account with a starting grant and one key."""
        if await self.store.count_accounts() > 0:
            return None
        account_id = await self.create_account(email, password, is_admin=True, grant=grant)
        return await self.create_key(account_id, "quickstart")

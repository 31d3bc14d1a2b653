"""The calls running in this process, by account and by key, so that disabling an account,
revoking a key or deleting an account ends its running work (streams, queued jobs, background
responses) — not only its next request.

A call is added when the pipeline has admitted it and removed when it ends (its settlement).
`end(access)` stops every call the change covers: each raises the change's error where it is
read (a stream's error event, a background response `failed`), and its settlement bills what
the backend produced, through the normal path, exactly once.

Authentication is cached (services/accounts.py) and admission awaits the database, so a request
authenticated just before a change may be admitted just after this process applied it. Changes
are therefore remembered for `remember` seconds: a call added meanwhile is stopped at once.
Adding and checking happen with no await between them, so no call slips through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from tokendock.errors import TokenDockError, Unauthorized

ACCOUNT_DISABLED = "account_disabled"
ACCOUNT_DELETED = "account_deleted"
ACCOUNT_ENABLED = "account_enabled"  # clears a remembered disable (re-enabled at once)
KEY_REVOKED = "key_revoked"
ENDED_BY_ACCESS = frozenset({ACCOUNT_DISABLED, ACCOUNT_DELETED, KEY_REVOKED})  # error codes
REMEMBER_SECONDS = 10.0  # > the key cache's lifetime + an admission's database round trips


@dataclass(frozen=True, slots=True)
class AccessChange:
    """One change of who may run work: an account disabled / deleted / enabled, a key revoked."""

    account_id: int
    key_id: int | None  # None: the whole account
    reason: str  # one of the constants above

    def error(self) -> TokenDockError:
        """What a call this change ends raises (an error event on a stream)."""
        if self.reason == KEY_REVOKED:
            message = "The API key was revoked; the request was stopped."
        elif self.reason == ACCOUNT_DELETED:
            message = "The account was deleted; the request was stopped."
        else:
            message = "The account was disabled; the request was stopped."
        return Unauthorized(message, code=self.reason)


class Stoppable(Protocol):
    account_id: int
    key_id: int

    def stop(self, error: TokenDockError) -> None:
        """End the work with `error` (a no-op once it has ended)."""
        ...


class Running:
    def __init__(self, *, remember: float = REMEMBER_SECONDS):
        self._remember = remember
        self._accounts: dict[int, set[Stoppable]] = {}
        self._keys: dict[int, set[Stoppable]] = {}
        # (account or key, id) -> (when this process applied it, the change)
        self._recent: dict[tuple[str, int], tuple[float, AccessChange]] = {}

    def add(self, call: Stoppable) -> None:
        """A call admitted; stopped at once if a change that covers it was just applied."""
        self._accounts.setdefault(call.account_id, set()).add(call)
        self._keys.setdefault(call.key_id, set()).add(call)
        if self._recent:
            change = self._recently(call.account_id, call.key_id)
            if change is not None:
                call.stop(change.error())

    def discard(self, call: Stoppable) -> None:
        for index, which in ((self._accounts, call.account_id), (self._keys, call.key_id)):
            calls = index.get(which)
            if calls is not None:
                calls.discard(call)
                if not calls:
                    del index[which]

    def end(self, change: AccessChange) -> int:
        """Apply a change: stop the calls it covers (how many), and remember it a while."""
        now = time.monotonic()
        self._forget_old(now)
        if change.reason == ACCOUNT_ENABLED:
            self._recent.pop(("account", change.account_id), None)
            return 0
        if change.key_id is None:
            self._recent[("account", change.account_id)] = (now, change)
            calls = self._accounts.get(change.account_id, set())
        else:
            self._recent[("key", change.key_id)] = (now, change)
            calls = self._keys.get(change.key_id, set())
        ending = list(calls)  # stop() may end a call, which discards it from the set
        for call in ending:
            call.stop(change.error())
        return len(ending)

    def count(self, account_id: int) -> int:
        """The account's calls running in this process."""
        return len(self._accounts.get(account_id, ()))

    def _recently(self, account_id: int, key_id: int) -> AccessChange | None:
        now = time.monotonic()
        for which in (("account", account_id), ("key", key_id)):
            seen = self._recent.get(which)
            if seen is not None and now - seen[0] < self._remember:
                return seen[1]
        return None

    def _forget_old(self, now: float) -> None:
        old = [k for k, (at, _) in self._recent.items() if now - at >= self._remember]
        for which in old:
            del self._recent[which]

"""Password hashing with argon2id, and a dummy hash so unknown emails cost the same time.

Parameters: OWASP's recommendation for argon2id (m = 19 MiB, t = 2, p = 1). The library's
default (64 MiB, p = 4) would make every log-in allocate 64 MiB in a server process whose whole
budget is 150 MB. `verify_password` reads the parameters from each stored hash, so hashes
made with other parameters keep working.
"""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy() -> str:
    # Made on first use, not at import: the CLI and the API hot path never need it.
    return _hasher.hash("tokendock-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """False for a wrong password or no account (the dummy hash keeps the timing equal)."""
    try:
        return _hasher.verify(password_hash or _dummy(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False

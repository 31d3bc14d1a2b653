"""API keys and redemption codes: high-entropy secrets stored only as SHA-256 digests.

A key looks like `td-` + 48 base62 characters (~285 bits). The digest is a plain SHA-256: the
secret is random, so no salt or slow hash is needed, and lookup by digest is one index probe.
"""

from __future__ import annotations

import hashlib
import secrets
import string

KEY_PREFIX = "td-"
CODE_PREFIX = "tdc-"
_ALPHABET = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def mint_key() -> str:
    return KEY_PREFIX + _random(48)


def mint_code() -> str:
    return CODE_PREFIX + _random(24)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(secret: str) -> str:
    """What a listing shows before the ellipsis: `td-AbC1`."""
    return secret[: len(KEY_PREFIX) + 4]


def last4(secret: str) -> str:
    return secret[-4:]


def redact(secret: str) -> str:
    """Safe to echo back in an error message."""
    if len(secret) <= 12:
        return "*" * len(secret)
    return f"{secret[:7]}…{secret[-4:]}"

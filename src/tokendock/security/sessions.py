"""Signed session cookies for the dashboard.

A session is (account id, CSRF token, issue time), serialised and signed with HMAC-SHA256 under
the server's secret: the client can read it but not forge or alter it. Account id 0 is an
anonymous visitor, who still has a CSRF token for the log-in and sign-up forms. Logging in
issues a fresh session (and token), so a token planted before log-in is worthless after it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Session:
    account_id: int  # 0: not logged in
    csrf: str
    issued: int  # unix seconds

    @classmethod
    def new(cls, account_id: int = 0) -> Session:
        return cls(account_id, secrets.token_urlsafe(24), int(time.time()))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(session: Session, secret: bytes) -> str:
    payload = _b64(orjson.dumps([session.account_id, session.csrf, session.issued]))
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(token: str, secret: bytes, *, max_age: float) -> Session | None:
    """The session in a cookie value, or None when it is forged, altered, malformed or old."""
    payload, _, mac = token.partition(".")
    if not payload or not mac:
        return None
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        account_id, csrf, issued = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, TypeError):
        return None
    if not (isinstance(account_id, int) and isinstance(csrf, str) and isinstance(issued, int)):
        return None
    if time.time() - issued > max_age:
        return None
    return Session(account_id, csrf, issued)

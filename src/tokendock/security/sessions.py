"""Signed session cookies for the dashboard.

A session is (account id, CSRF token, issue time, session id), serialised and signed with
HMAC-SHA256 under the server's secret: the client can read it but not forge or alter it. Account
id 0 is an anonymous visitor, who still has a CSRF token for the log-in and sign-up forms.
Logging in issues a fresh session (and token), so a token planted before log-in is worthless
after it.

A signature only proves the server issued the cookie, not that the session is still live: the
session id names a row in the database (by its digest), and ending the session deletes the row
(services/sessions.py). A signed cookie without a live row is anonymous.
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
    sid: str = ""  # names the live session in the database; "" when anonymous

    @classmethod
    def new(cls, account_id: int = 0) -> Session:
        sid = secrets.token_urlsafe(24) if account_id else ""
        return cls(account_id, secrets.token_urlsafe(24), int(time.time()), sid)

    @property
    def digest(self) -> str:
        """What the database keeps of the session id: a leaked table opens no session."""
        return hashlib.sha256(self.sid.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(session: Session, secret: bytes) -> str:
    fields = [session.account_id, session.csrf, session.issued, session.sid]
    payload = _b64(orjson.dumps(fields))
    mac = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(token: str, secret: bytes, *, max_age: float) -> Session | None:
    """The session in a cookie value, or None when it is forged, altered, malformed or old.
    (Whether it is still live is the database's answer, not the cookie's.)"""
    payload, _, mac = token.partition(".")
    if not payload or not mac:
        return None
    expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(mac)):
            return None
        account_id, csrf, issued, sid = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError, TypeError):
        return None
    if not all(isinstance(x, int) for x in (account_id, issued)):
        return None
    if not (isinstance(csrf, str) and isinstance(sid, str)) or bool(account_id) != bool(sid):
        return None
    if time.time() - issued > max_age:
        return None
    return Session(account_id, csrf, issued, sid)

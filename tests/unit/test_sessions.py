"""Signed session cookies: round trip, tampering, expiry, and the cookie's flags."""

from __future__ import annotations

import time

from starlette.responses import Response

from tokendock.security.sessions import Session, sign, verify
from tokendock.web.dashboard.session import Sessions

SECRET = b"x" * 32


def test_round_trip_and_fresh_tokens() -> None:
    session = Session.new(7)
    assert verify(sign(session, SECRET), SECRET, max_age=60) == session
    assert Session.new(7).csrf != session.csrf


def test_tampered_foreign_or_garbled_cookies_are_rejected() -> None:
    token = sign(Session.new(7), SECRET)
    payload, _, mac = token.partition(".")
    forged = sign(Session(1, "t", int(time.time())), SECRET).partition(".")[0] + "." + mac
    for bad in (forged, payload + ".", "." + mac, "garbage", payload + "." + mac[:-2] + "AA"):
        assert verify(bad, SECRET, max_age=60) is None, bad
    assert verify(token, b"y" * 32, max_age=60) is None


def test_old_sessions_expire() -> None:
    old = Session(7, "t", int(time.time()) - 120)
    assert verify(sign(old, SECRET), SECRET, max_age=60) is None


def test_cookie_flags() -> None:
    for secure in (False, True):
        response = Response()
        Sessions(SECRET, max_age=3600, secure=secure).save(response, Session.new(3))
        flags = {p.strip().lower() for p in response.headers["set-cookie"].split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/", "max-age=3600"} <= flags
        assert ("secure" in flags) is secure

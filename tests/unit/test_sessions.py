"""Signed session cookies: round trip, tampering, expiry, and the cookie's flags."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import orjson
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


def test_a_signed_in_session_names_a_live_session_by_an_id_kept_only_as_a_digest() -> None:
    session = Session.new(7)
    assert session.sid and session.digest != session.sid and len(session.digest) == 64
    assert Session.new().sid == ""  # anonymous: nothing to look up


def test_cookies_of_the_old_three_field_format_or_with_a_mismatched_id_are_rejected() -> None:
    def signed(fields: list[object]) -> str:
        payload = base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b"=").decode()
        mac = hmac.new(SECRET, payload.encode(), hashlib.sha256).digest()
        return payload + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    now = int(time.time())
    for fields in ([7, "t", now], [7, "t", now, ""], [0, "t", now, "sid"], [7, "t", now, 5]):
        assert verify(signed(fields), SECRET, max_age=60) is None, fields
    assert verify(signed([7, "t", now, "sid"]), SECRET, max_age=60) == Session(7, "t", now, "sid")

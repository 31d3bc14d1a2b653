"""Dashboard sessions and CSRF: a signed cookie per visitor, a token on every form.

The cookie is HttpOnly, SameSite=Lax, Path=/ and Secure when the site is served over HTTPS.
Every POST must carry the session's CSRF token in its `csrf` field; anything else is a 403.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from tokendock.config import Settings
from tokendock.security import sessions
from tokendock.security.sessions import Session

COOKIE = "td_session"


def load_secret(settings: Settings) -> bytes:
    """The signing secret: configured, or made once and kept in the data directory."""
    if settings.session_secret:
        return settings.session_secret.encode()
    path = Path(settings.data_dir) / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", encoding="ascii") as out:  # exclusive: first process wins
                out.write(secrets.token_urlsafe(48))
            path.chmod(0o600)
        except FileExistsError:
            pass
    return path.read_text(encoding="ascii").strip().encode()


class Sessions:
    def __init__(self, secret: bytes, *, max_age: float, secure: bool):
        self._secret = secret
        self._max_age = max_age
        self._secure = secure

    @property
    def lifetime(self) -> float:
        return self._max_age

    def of(self, request: Request) -> Session:
        """The visitor's session (a new anonymous one when the cookie is missing or bad)."""
        cached = request.scope.get("tokendock.session")
        if isinstance(cached, Session):
            return cached
        token = request.cookies.get(COOKIE)
        session = sessions.verify(token, self._secret, max_age=self._max_age) if token else None
        if session is None:
            session = Session.new()
        request.scope["tokendock.session"] = session
        return session

    def save(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            sessions.sign(session, self._secret),
            max_age=int(self._max_age),
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure,
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=self._secure)


MAX_FORM = 64 * 1024  # the largest dashboard form is a few hundred bytes


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of each); none when the body is larger than
    MAX_FORM (so its CSRF check fails), read no further than that."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM:
        return {}
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM:
            return {}
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # later request.body() calls see the same bytes
    text = body.decode("utf-8", "replace")
    return {_clean(k): _clean(v[-1]) for k, v in parse_qs(text, keep_blank_values=True).items()}


def _clean(text: str) -> str:
    """Without NUL: no database column can hold one (PostgreSQL refuses it), and no form field
    means one. Invalid UTF-8 was already replaced while decoding."""
    return text.replace("\x00", "")


def csrf_ok(fields: dict[str, str], session: Session) -> bool:
    given = fields.get("csrf", "")
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())

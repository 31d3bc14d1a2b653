"""What every dashboard page shares: templates, security headers, the signed-in check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tokendock.billing.money import format_credits
from tokendock.security.sessions import Session
from tokendock.storage.accounts import AccountRow
from tokendock.web.dashboard.session import Sessions, csrf_ok, form
from tokendock.web.deps import Services, services_of

templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
templates.env.filters["credits"] = format_credits

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def sessions_of(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


def render(
    request: Request, name: str, session: Session, *, status: int = 200, **context: Any
) -> Response:
    response = templates.TemplateResponse(
        request,
        name,
        {
            "csrf": session.csrf,
            "signed_in": bool(session.account_id),
            "is_admin": bool(getattr(context.get("account"), "is_admin", False)),
            **context,
        },
        status_code=status,
        headers=SECURITY_HEADERS,
    )
    sessions_of(request).save(response, session)  # an anonymous visitor gets its CSRF token too
    return response


def redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers={"cache-control": "no-store"})


def refused(request: Request, session: Session) -> Response:
    return render(
        request,
        "error.html",
        session,
        status=403,
        title="Form expired",
        message="This form was not sent from this site, or it has expired. Go back, reload the "
        "page and try again.",
    )


async def signed_in(request: Request) -> tuple[Services, Session, AccountRow] | Response:
    """The services, session and account of a signed-in visitor, or a redirect to /login (and
    the cookie cleared) when the session is anonymous, ended, expired or its account disabled."""
    services = services_of(request)
    session = sessions_of(request).of(request)
    if not session.account_id:
        return redirect("/login")
    account = await services.accounts.sessions.account(session)
    if account is None:
        response = redirect("/login")
        sessions_of(request).clear(response)
        return response
    return services, session, account


async def visitor(request: Request) -> Session:
    """The visitor's session if it is live, else a fresh anonymous one (for log-in forms)."""
    session = sessions_of(request).of(request)
    if session.account_id and await services_of(request).accounts.sessions.account(session):
        return session
    if session.account_id:
        session = Session.new()
        request.scope["tokendock.session"] = session
    return session


async def sign_in(request: Request, response: Response, account_id: int) -> None:
    """Start a new live session (and CSRF token) for the account, in the response's cookie."""
    sessions = sessions_of(request)
    book = services_of(request).accounts.sessions
    sessions.save(response, await book.start(account_id, sessions.lifetime))


Gate = Callable[[Request], Awaitable[tuple[Services, Session, AccountRow] | Response]]


async def posted(
    request: Request, gate: Gate = signed_in
) -> tuple[Services, Session, AccountRow, dict[str, str]] | Response:
    """A form post from a signed-in visitor (`gate` may ask more, e.g. an admin): its services,
    session, account and fields — or the response that refuses it (log-in, 403)."""
    found = await gate(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    fields = await form(request)
    if not csrf_ok(fields, session):
        return refused(request, session)
    return services, session, account, fields

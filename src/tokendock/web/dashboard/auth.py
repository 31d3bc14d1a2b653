"""Signing up, in and out.

Log-in and sign-up are throttled per client address (services/throttle.py): nobody can lock a
person out from their own address. A log-in or sign-up starts a new live session; log-out ends
it in the database, so a copied cookie is worthless afterwards. Emails and passwords are bounded
before any work (services/accounts.py), identically on SQLite and PostgreSQL.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import AmountError, parse_credits
from tokendock.errors import RateLimited, TokenDockError
from tokendock.security.sessions import Session
from tokendock.services.accounts import too_long
from tokendock.services.throttle import SignInThrottle
from tokendock.web.dashboard.session import csrf_ok, form
from tokendock.web.dashboard.views import (
    redirect,
    refused,
    render,
    sessions_of,
    sign_in,
    visitor,
)
from tokendock.web.deps import Services, services_of
from tokendock.web.headers import of_error

router = APIRouter(include_in_schema=False)
MIN_PASSWORD = 10


def throttle(services: Services) -> SignInThrottle:
    return SignInThrottle(services.limiter, services.accounts.throttle_events, services.settings)


def address(request: Request) -> str:
    """The client's address as the server sees it (uvicorn takes X-Forwarded-For only from
    the proxies in FORWARDED_ALLOW_IPS, by default 127.0.0.1)."""
    return request.client.host if request.client else "unknown"


def too_many(request: Request, session: Session, exc: RateLimited) -> Response:
    response = render(
        request, "error.html", session, status=429, title="Too many attempts", message=exc.message
    )
    response.headers.update(of_error(exc))
    return response


@router.get("/")
async def home(request: Request) -> Response:
    session = await visitor(request)
    return redirect("/dashboard" if session.account_id else "/login")


@router.get("/login")
async def login_page(request: Request) -> Response:
    session = await visitor(request)
    if session.account_id:
        return redirect("/dashboard")
    return render(
        request, "login.html", session, signup_open=services_of(request).settings.signup_open
    )


@router.post("/login")
async def login(request: Request) -> Response:
    services = services_of(request)
    session = sessions_of(request).of(request)
    fields = await form(request)
    if not csrf_ok(fields, session):
        return refused(request, session)
    email = fields.get("email", "").strip().lower()
    try:
        await throttle(services).login(address(request), email)
    except RateLimited as exc:
        return too_many(request, session, exc)
    account = await services.accounts.login(email, fields.get("password", ""))
    if account is None:
        await throttle(services).failed(address(request), email)
        return render(
            request,
            "login.html",
            session,
            status=401,
            email=email[:254],
            error="That email and password do not match an active account.",
            signup_open=services.settings.signup_open,
        )
    response = redirect("/dashboard")
    await sign_in(request, response, account.id)  # a fresh session and token
    return response


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    services = services_of(request)
    session = await visitor(request)
    if session.account_id:
        return redirect("/dashboard")
    return render(request, "signup.html", session, open=services.settings.signup_open)


@router.post("/signup")
async def signup(request: Request) -> Response:
    services = services_of(request)
    session = sessions_of(request).of(request)
    fields = await form(request)
    if not csrf_ok(fields, session):
        return refused(request, session)
    if not services.settings.signup_open:
        return render(request, "signup.html", session, status=403, open=False)
    email = fields.get("email", "").strip().lower()
    password = fields.get("password", "")
    problem = password_problem(email, password, fields.get("password2", ""))
    if "@" not in email or "." not in email.rpartition("@")[2]:
        problem = "Enter a valid email address."
    problem = too_long(email, password) or problem
    if problem is None:
        try:
            await throttle(services).signup(address(request))
        except RateLimited as exc:
            return too_many(request, session, exc)
        try:
            grant = parse_credits(services.settings.signup_grant)
            account_id = await services.accounts.create_account(email, password, grant=grant)
        except (TokenDockError, AmountError):
            # Whether the email is taken is not told apart from other failures.
            problem = "We could not create an account with these details."
        else:
            response = redirect("/dashboard")
            await sign_in(request, response, account_id)
            return response
    return render(
        request, "signup.html", session, status=400, open=True, email=email[:254], error=problem
    )


def password_problem(email: str, password: str, again: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"Use a password of at least {MIN_PASSWORD} characters."
    if password != again:
        return "The two passwords differ."
    local = email.partition("@")[0]
    if len(set(password)) < 4 or (len(local) >= 4 and local in password.lower()):
        return "Choose a password that is harder to guess (not your email, not repeated letters)."
    return too_long("", password)


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = sessions_of(request).of(request)
    fields = await form(request)
    if not csrf_ok(fields, session):
        return refused(request, session)
    await services_of(request).accounts.sessions.end(session)  # the cookie dies with its row
    response = redirect("/login")
    sessions_of(request).clear(response)
    return response

"""Dashboard pages: sign up, log in / out, overview, API keys, credits.

Every page is rendered on the server; every form posts back with the session's CSRF token.
A page that needs an account redirects anonymous visitors to /login. Another account's keys
can never be touched: every query is scoped to the signed-in account, and a key id that is not
the account's is a 404, the same as one that does not exist.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import AmountError, format_credits, parse_credits
from tokendock.errors import RateLimited, TokenDockError
from tokendock.limits.base import Limits, Subject
from tokendock.security.sessions import Session
from tokendock.storage.accounts import AccountRow
from tokendock.web.dashboard.session import csrf_ok, form
from tokendock.web.dashboard.views import (
    posted,
    redirect,
    refused,
    render,
    sessions_of,
    signed_in,
)
from tokendock.web.deps import Services, services_of

router = APIRouter(include_in_schema=False)
MIN_PASSWORD = 10
# -- signing up, in and out ----------------------------------------------------------------


@router.get("/")
async def home(request: Request) -> Response:
    session = sessions_of(request).of(request)
    return redirect("/dashboard" if session.account_id else "/login")


@router.get("/login")
async def login_page(request: Request) -> Response:
    session = sessions_of(request).of(request)
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
        await _throttle(request, services, email)
    except RateLimited as exc:
        response = render(
            request,
            "error.html",
            session,
            status=429,
            title="Too many attempts",
            message="Too many log-in attempts. Wait a minute, then try again.",
        )
        response.headers["retry-after"] = exc.headers.get("retry-after", "60")
        return response
    account = await services.accounts.login(email, fields.get("password", ""))
    if account is None:
        return render(
            request,
            "login.html",
            session,
            status=401,
            email=email,
            error="That email and password do not match an active account.",
            signup_open=services.settings.signup_open,
        )
    response = redirect("/dashboard")
    sessions_of(request).save(response, Session.new(account.id))  # a fresh session and token
    return response


async def _throttle(request: Request, services: Services, email: str) -> None:
    """Log-in attempts go through the rate limiter: per email, and per client address."""
    per_minute = services.settings.login_attempts_per_minute
    who = hashlib.sha256(email.encode()).hexdigest()[:24]
    address = request.client.host if request.client else "unknown"
    subjects = (
        Subject(f"login:{who}", Limits(rpm=per_minute)),
        Subject(f"login-ip:{address}", Limits(rpm=per_minute * 4)),
    )
    admission = await services.limiter.admit(subjects, 0, f"login:{who}")
    await services.limiter.settle(admission, 0)


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    services = services_of(request)
    session = sessions_of(request).of(request)
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
    problem = _password_problem(email, password, fields.get("password2", ""))
    if "@" not in email or "." not in email.rpartition("@")[2]:
        problem = "Enter a valid email address."
    if problem is None:
        try:
            grant = parse_credits(services.settings.signup_grant)
            account_id = await services.accounts.create_account(email, password, grant=grant)
        except (TokenDockError, AmountError):
            # Whether the email is taken is not told apart from other failures.
            problem = "We could not create an account with these details."
        else:
            response = redirect("/dashboard")
            sessions_of(request).save(response, Session.new(account_id))
            return response
    return render(
        request, "signup.html", session, status=400, open=True, email=email, error=problem
    )


def _password_problem(email: str, password: str, again: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"Use a password of at least {MIN_PASSWORD} characters."
    if password != again:
        return "The two passwords differ."
    local = email.partition("@")[0]
    if len(set(password)) < 4 or (len(local) >= 4 and local in password.lower()):
        return "Choose a password that is harder to guess (not your email, not repeated letters)."
    return None


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = sessions_of(request).of(request)
    fields = await form(request)
    if not csrf_ok(fields, session):
        return refused(request, session)
    response = redirect("/login")
    sessions_of(request).clear(response)
    return response


# -- the signed-in pages -------------------------------------------------------------------


@router.get("/dashboard")
async def overview(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    keys = [k for k in await services.accounts.store.list_keys(account.id) if k.revoked_at is None]
    days = await services.history.usage_by_day(account.id, limit=7)
    return render(
        request, "overview.html", session, account=account, keys=keys, days=days, page="overview"
    )


@router.get("/dashboard/keys")
async def keys_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    return await _keys(request, services, session, account)


async def _keys(
    request: Request,
    services: Services,
    session: Session,
    account: AccountRow,
    *,
    status: int = 200,
    **context: Any,
) -> Response:
    keys = await services.accounts.store.list_keys(account.id)
    models = [s.id for s in services.directory.visible()]
    return render(
        request,
        "keys.html",
        session,
        status=status,
        account=account,
        keys=keys,
        models=models,
        now=datetime.now(UTC),
        page="keys",
        **context,
    )


@router.post("/dashboard/keys")
async def create_key(request: Request) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, session, account, fields = found
    body = await request.body()
    chosen = [m for m in _all_values(body, "models") if m]
    name = fields.get("name", "").strip()[:100]
    try:
        if not name:
            raise ValueError("Give the key a name.")
        expires = _end_of_day(fields.get("expires", ""))
        limit = parse_credits(fields["spend_limit"]) if fields.get("spend_limit") else None
        known = {s.id for s in services.directory.visible()}
        if any(m not in known for m in chosen):
            raise ValueError("Pick models from the list.")
        new = await services.accounts.create_key(
            account.id, name, expires_at=expires, spend_limit=limit, models=chosen or None
        )
    except (ValueError, AmountError) as exc:
        return await _keys(request, services, session, account, status=400, error=str(exc))
    return await _keys(request, services, session, account, new_secret=new.secret, new_name=name)


def _all_values(body: bytes, name: str) -> list[str]:
    return parse_qs(body.decode("utf-8", "replace")).get(name, [])


def _end_of_day(text: str) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise ValueError("Give the expiry as a date (YYYY-MM-DD).") from None
    if day < datetime.now(UTC).date():
        raise ValueError("The expiry date is in the past.")
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


@router.post("/dashboard/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: int) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, session, account, _ = found
    try:
        await services.accounts.revoke_key(account.id, key_id)
    except TokenDockError:
        return render(
            request,
            "error.html",
            session,
            status=404,
            title="No such key",
            message="This account has no live API key with that id.",
            signed_in=True,
        )
    return redirect("/dashboard/keys")


@router.get("/dashboard/credits")
async def credits_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    return await _credits(request, services, session, account)


async def _credits(
    request: Request,
    services: Services,
    session: Session,
    account: AccountRow,
    *,
    status: int = 200,
    **context: Any,
) -> Response:
    entries = await services.history.credits(account.id)
    days = await services.history.usage_by_day(account.id)
    return render(
        request,
        "credits.html",
        session,
        status=status,
        account=account,
        entries=entries,
        days=days,
        page="credits",
        **context,
    )


@router.post("/dashboard/credits/redeem")
async def redeem(request: Request) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, session, account, fields = found
    try:
        amount = await services.accounts.redeem(account.id, fields.get("code", ""))
    except TokenDockError as exc:
        return await _credits(request, services, session, account, status=400, error=exc.message)
    account = await services.accounts.store.account_by_id(account.id) or account
    return await _credits(
        request, services, session, account, notice=f"Redeemed {format_credits(amount)} credits."
    )

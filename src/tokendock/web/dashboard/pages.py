"""Dashboard pages: overview, API keys, credits (and, through auth.py and account.py, signing
up, in and out, the password and ending sessions).

Every page is rendered on the server; every form posts back with the session's CSRF token.
A page that needs an account redirects anonymous visitors to /login. Another account's keys
can never be touched: every query is scoped to the signed-in account, and a key id that is not
the account's is a 404, the same as one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import AmountError, format_credits, parse_credits
from tokendock.errors import TokenDockError
from tokendock.security.sessions import Session
from tokendock.storage.accounts import AccountRow
from tokendock.web.dashboard import account as account_pages
from tokendock.web.dashboard import auth
from tokendock.web.dashboard.views import posted, redirect, render, signed_in
from tokendock.web.deps import Services

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)  # sign up, log in and out
router.include_router(account_pages.router)  # password, sign out everywhere


# -- the signed-in pages -------------------------------------------------------------------


@router.get("/dashboard")
async def overview(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    keys = [k for k in await services.accounts.store.list_keys(account.id) if k.revoked_at is None]
    days = await services.history.usage_by_day(account.id, limit=7)
    live = await services.accounts.sessions.live(account.id)
    return render(
        request,
        "overview.html",
        session,
        account=account,
        keys=keys,
        days=days,
        live_sessions=live,
        page="overview",
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
    values = parse_qs(body.decode("utf-8", "replace")).get(name, [])
    return [v.replace("\x00", "") for v in values]  # no column can hold a NUL


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

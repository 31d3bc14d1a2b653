"""Operator pages (admin accounts only; anyone else gets a 403): accounts — search, disable,
sign out everywhere, grant credits with a reason —, redemption codes in bulk, the models and
their prices, and the requests that recently failed."""

from __future__ import annotations

import secrets

from fastapi import APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import MAX_AMOUNT, AmountError, format_credits, parse_credits
from tokendock.billing.pricing import Price
from tokendock.catalog import PriceSpec
from tokendock.errors import TokenDockError
from tokendock.security.sessions import Session
from tokendock.storage.accounts import AccountRow
from tokendock.storage.model_settings import ModelSetting
from tokendock.web.dashboard.views import posted, redirect, render, signed_in
from tokendock.web.deps import Services

router = APIRouter(include_in_schema=False)
MAX_CODES = 500


async def _admin(request: Request) -> tuple[Services, Session, AccountRow] | Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    _, session, account = found
    if not account.is_admin:
        return render(
            request,
            "error.html",
            session,
            status=403,
            account=account,
            title="Administrators only",
            message="This page is for the operators of this TokenDock server.",
        )
    return found


async def _page(
    request: Request,
    services: Services,
    session: Session,
    account: AccountRow,
    *,
    status: int = 200,
    **context: object,
) -> Response:
    search = request.query_params.get("q", "").strip()
    return render(
        request,
        "admin.html",
        session,
        status=status,
        page="admin",
        account=account,
        search=search,
        accounts=await services.admin.accounts(search),
        codes=await services.admin.codes(),
        errors=await services.admin.recent_errors(),
        models=[
            (spec, services.directory.enabled(spec.id), services.directory.price_spec(spec))
            for spec in services.models.specs()
        ],
        **context,
    )


@router.get("/admin")
async def admin_page(request: Request) -> Response:
    found = await _admin(request)
    if isinstance(found, Response):
        return found
    return await _page(request, *found)


@router.post("/admin/accounts/{account_id}/grant")
async def grant(request: Request, account_id: int) -> Response:
    found = await posted(request, _admin)
    if isinstance(found, Response):
        return found
    services, session, admin, fields = found
    reason = fields.get("reason", "").strip()[:200]
    try:
        amount = parse_credits(fields.get("amount", ""), "amount")
        if amount == 0 or not reason:
            raise AmountError("Give a non-zero amount and a reason.")
        target = await services.accounts.store.account_by_id(account_id)
        if target is None:
            raise AmountError("No such account.")
        await services.accounts.ledger.credit(
            account_id,
            amount,
            kind="grant" if amount > 0 else "adjustment",
            idempotency_key=f"admin:{secrets.token_hex(12)}",
            reference=f"{reason} (by {admin.email})",
        )
    except (AmountError, ValueError) as exc:
        return await _page(request, services, session, admin, status=400, error=str(exc))
    except TokenDockError as exc:  # InsufficientCredit: an adjustment below zero
        return await _page(request, services, session, admin, status=400, error=exc.message)
    return await _page(
        request,
        services,
        session,
        admin,
        notice=f"{format_credits(amount)} credits to {target.email}: {reason}",
    )


@router.post("/admin/accounts/{account_id}/disable")
async def disable(request: Request, account_id: int) -> Response:
    return await _set_disabled(request, account_id, True)


@router.post("/admin/accounts/{account_id}/enable")
async def enable(request: Request, account_id: int) -> Response:
    return await _set_disabled(request, account_id, False)


async def _set_disabled(request: Request, account_id: int, disabled: bool) -> Response:
    found = await posted(request, _admin)
    if isinstance(found, Response):
        return found
    services, session, admin, _ = found
    if account_id == admin.id:
        return await _page(
            request, services, session, admin, status=400, error="You cannot disable yourself."
        )
    # Its keys stop working and its running requests end, on every replica.
    await services.accounts.set_disabled(account_id, disabled)
    if disabled:  # its sessions end too, so enabling it again revives none of them
        await services.accounts.sessions.end_all(account_id)
    return redirect("/admin")


@router.post("/admin/accounts/{account_id}/sessions/end")
async def sign_out_everywhere(request: Request, account_id: int) -> Response:
    found = await posted(request, _admin)
    if isinstance(found, Response):
        return found
    services, session, admin, _ = found
    target = await services.accounts.store.account_by_id(account_id)
    if target is None:
        return await _page(request, services, session, admin, status=404, error="No such account.")
    ended = await services.accounts.sessions.end_all(account_id)
    if account_id == admin.id:  # the admin's own sessions, this one included
        response = redirect("/login")
        request.app.state.sessions.clear(response)
        return response
    return await _page(
        request, services, session, admin, notice=f"{target.email}: {ended} session(s) ended."
    )


@router.post("/admin/codes")
async def create_codes(request: Request) -> Response:
    found = await posted(request, _admin)
    if isinstance(found, Response):
        return found
    services, session, admin, fields = found
    try:
        amount = parse_credits(fields.get("amount", ""), "amount")
        count = int(fields.get("count", "1"))
        if amount <= 0 or not 1 <= count <= MAX_CODES:
            raise ValueError(f"Give a positive amount and 1–{MAX_CODES} codes.")
    except (AmountError, ValueError) as exc:
        return await _page(request, services, session, admin, status=400, error=str(exc))
    codes = await services.accounts.create_codes(amount, count)
    return await _page(request, services, session, admin, new_codes=codes)


@router.post("/admin/models/{model_id:path}")
async def save_model(request: Request, model_id: str) -> Response:
    found = await posted(request, _admin)
    if isinstance(found, Response):
        return found
    services, session, admin, fields = found
    try:
        services.models.spec(model_id)
        price = PriceSpec(
            input=fields.get("input", ""),
            output=fields.get("output", ""),
            cached_input=fields.get("cached_input", "").strip() or None,  # blank: the input's
        )
        assert price.input is not None and price.output is not None, "a token price"
        Price.parse(price.input, price.output, price.cached_input)  # ≤ money.MAX_AMOUNT each
    except (TokenDockError, ValidationError, AmountError):
        return await _page(
            request,
            services,
            session,
            admin,
            status=400,
            error="Prices are credits per million tokens: numbers ≥ 0 with at most 6 decimals, "
            f"at most {format_credits(MAX_AMOUNT)}.",
        )
    setting = ModelSetting(
        enabled=fields.get("enabled") == "on",
        input_price=price.input,
        output_price=price.output,
        cached_input_price=price.cached_input,
    )
    await services.directory.save(model_id, setting)
    state = "served" if setting.enabled else "switched off"
    return await _page(
        request,
        services,
        session,
        admin,
        notice=f"{model_id}: {state}, {price.input} / {price.output} credits per million tokens"
        + ("." if price.cached_input is None else f", cached input {price.cached_input}."),
    )

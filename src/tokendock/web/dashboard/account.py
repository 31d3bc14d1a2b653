"""The account's own security: change the password, sign out everywhere.

Both end every session of the account (services/sessions.py). After a password change the
browser that made it gets a new session, so its owner stays signed in there and nowhere else.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.web.dashboard.auth import password_problem
from tokendock.web.dashboard.views import posted, redirect, render, sessions_of, sign_in, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/password")
async def password_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    _, session, account = found
    changed = request.query_params.get("changed") == "1"
    notice = "Password changed. Every other session of this account has ended." if changed else None
    return render(
        request, "password.html", session, account=account, page="password", notice=notice
    )


@router.post("/dashboard/password")
async def change_password(request: Request) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, session, account, fields = found
    new = fields.get("password", "")
    problem = password_problem(account.email, new, fields.get("password2", ""))
    if problem is None and not await services.accounts.change_password(
        account.id, fields.get("current", ""), new
    ):
        problem = "Your current password is not right."
    if problem is not None:
        return render(
            request,
            "password.html",
            session,
            status=400,
            account=account,
            page="password",
            error=problem,
        )
    response = redirect("/dashboard/password?changed=1")  # its page has the new CSRF token
    await sign_in(request, response, account.id)
    return response


@router.post("/dashboard/sessions/end")
async def sign_out_everywhere(request: Request) -> Response:
    found = await posted(request)
    if isinstance(found, Response):
        return found
    services, _, account, _ = found
    await services.accounts.sessions.end_all(account.id)
    response = redirect("/login")
    sessions_of(request).clear(response)
    return response

"""The playground page; the browser streams from /v1/chat/completions itself (static/playground.js)
with the session's playground key, so its requests are limited and billed like any other."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/playground")
async def playground(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    directory = services.directory
    models = [s.id for s in directory.visible() if directory.price_spec(s) is not None]
    return render(
        request, "playground.html", session, page="playground", account=account, models=models
    )

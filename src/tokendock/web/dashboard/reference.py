"""The API reference page: this server's base URL and copy-ready snippets."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)


@router.get("/dashboard/api")
async def reference(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    configured = services.settings.base_url
    base = (configured or str(request.base_url)).rstrip("/") + "/v1"
    models = [s.id for s in services.directory.visible()]
    return render(
        request,
        "reference.html",
        session,
        page="api",
        account=account,
        base=base,
        model=models[0] if models else "MODEL",
        models=models,
    )

"""The API reference page: this server's base URL and copy-ready snippets."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.config import Settings
from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)


def public_base(settings: Settings) -> str:
    """The configured base URL, else http://HOST:PORT from the settings — never the request's
    Host header, which any client can set to point the snippets at a server of its choosing."""
    if settings.base_url:
        return settings.base_url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


@router.get("/dashboard/api")
async def reference(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    base = public_base(services.settings) + "/v1"
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

"""The API reference page: this server's base URL and copy-ready snippets (curl, the OpenAI
Python and JavaScript SDKs, Anthropic's Python SDK) for chat completions, the Responses API,
the Anthropic Messages API and embeddings — each with a model of the right kind: the first
chat model the catalog serves, and for embeddings the first `task = "embedding"` model."""

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
    root = public_base(services.settings)
    specs = list(services.directory.visible())
    chat = [s.id for s in specs if s.task == "generation"]
    embedding = [s.id for s in specs if s.task == "embedding"]
    return render(
        request,
        "reference.html",
        session,
        page="api",
        account=account,
        root=root,  # Anthropic's SDK adds /v1 itself
        base=root + "/v1",
        chat=chat[0] if chat else "CHAT_MODEL",
        embedding=embedding[0] if embedding else "EMBEDDING_MODEL",
        chat_models=chat,
        embedding_models=embedding,
    )

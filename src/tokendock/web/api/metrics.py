"""GET /metrics: Prometheus exposition (every worker's, with --workers N)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from starlette.responses import Response

from tokendock.errors import InvalidAPIKey
from tokendock.web.deps import Deps

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request, deps: Deps) -> Response:
    token = deps.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise InvalidAPIKey("The metrics endpoint needs the operator's metrics token.")
    body, content_type = deps.metrics.render()
    return Response(body, media_type=content_type)

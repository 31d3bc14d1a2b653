from __future__ import annotations

from fastapi import APIRouter

from tokendock.errors import ModelNotReady
from tokendock.web.deps import Deps
from tokendock.web.responses import JSONResponse, error_response

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process answers. Never touches the engine."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(deps: Deps) -> JSONResponse:
    """Readiness: every embedded model is loaded. Also shows each upstream deployment's health
    (which does not make this process unready)."""
    if deps.models.ready:
        upstreams = {m: r.status() for m, r in deps.models.upstreams.routers.items()}
        body: dict[str, object] = {
            "status": "ready",
            "models": [s.id for s in deps.models.specs()],
        }
        if upstreams:
            body["upstreams"] = upstreams
        return JSONResponse(body)
    return error_response(ModelNotReady("Models are still loading."))

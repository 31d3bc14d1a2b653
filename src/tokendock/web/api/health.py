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
    """Readiness: every catalog model is loaded."""
    if deps.models.ready:
        return JSONResponse({"status": "ready", "models": [s.id for s in deps.models.specs()]})
    return error_response(ModelNotReady("Models are still loading."))

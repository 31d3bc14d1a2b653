"""GET /health (liveness) and GET /ready (readiness), for load balancers and probes.

/ready shows its details (models, each embedded engine's slots / queue / KV use / speed, each
upstream deployment's state and last error) only to
those `shows_details` allows (see metrics.py); anyone else learns ready or not ready."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request

from tokendock.errors import ModelNotReady
from tokendock.web.api.metrics import shows_details
from tokendock.web.deps import Deps
from tokendock.web.responses import JSONResponse, error_response

router = APIRouter()


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process answers. Never touches the engine."""
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request, deps: Deps) -> JSONResponse:
    """Readiness: every embedded model is loaded. Upstream deployments' health is shown too
    (it does not make this process unready)."""
    details = shows_details(request, deps.settings)
    if not deps.models.ready:
        message = "Models are still loading." if details else "Not ready."
        return error_response(ModelNotReady(message))
    body: dict[str, object] = {"status": "ready"}
    if details:
        body["models"] = [s.id for s in deps.models.specs()]
        body["engines"] = {e.model_id: asdict(e.load()) for e in deps.models.engines()}
        upstreams = {m: r.status() for m, r in deps.models.upstreams.routers.items()}
        if upstreams:
            body["upstreams"] = upstreams
    return JSONResponse(body)

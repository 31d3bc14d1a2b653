from __future__ import annotations

from fastapi import APIRouter

from tokendock.protocol.models import model_card, model_list
from tokendock.web.deps import Deps
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1")


@router.get("/models")
async def list_models(deps: Deps) -> JSONResponse:
    cards = [model_card(s.id, s.created, s.owned_by) for s in deps.directory.visible()]
    return JSONResponse(model_list(cards))


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, deps: Deps) -> JSONResponse:
    spec = deps.directory.check(model_id)
    return JSONResponse(model_card(spec.id, spec.created, spec.owned_by))

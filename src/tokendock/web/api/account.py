"""Authenticated JSON endpoints for one's own account: balance, redemption, usage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tokendock.billing.money import format_credits
from tokendock.web.deps import CurrentKey, Deps, parse_body
from tokendock.web.responses import JSONResponse

router = APIRouter(prefix="/v1")


class RedeemRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    code: Annotated[str, Field(min_length=1, max_length=200)]


@router.get("/credits")
async def credits(deps: Deps, key: CurrentKey) -> JSONResponse:
    balance = await deps.accounts.ledger.balance(key.account_id)
    return JSONResponse(
        {
            "object": "credit_balance",
            "balance": format_credits(balance),
            "balance_micro_credits": balance,
        }
    )


@router.post("/credits/redeem")
async def redeem(request: Request, deps: Deps, key: CurrentKey) -> JSONResponse:
    body = await parse_body(request, RedeemRequest)
    amount = await deps.accounts.redeem(key.account_id, body.code)
    balance = await deps.accounts.ledger.balance(key.account_id)
    return JSONResponse(
        {
            "object": "redemption",
            "amount": format_credits(amount),
            "balance": format_credits(balance),
        },
        headers={"x-tokendock-credit-remaining": format_credits(balance)},
    )


@router.get("/usage")
async def usage(
    deps: Deps, key: CurrentKey, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> JSONResponse:
    rows = await deps.accounts.store.usage(key.account_id, limit)
    data: list[dict[str, Any]] = [
        {
            "request_id": r["request_id"],
            "key_id": r["key_id"],
            "model": r["model"],
            "prompt_tokens": r["prompt_tokens"],  # or the quantity of `unit`
            "unit": deps.directory.unit(r["model"]),  # what the model is sold by (catalog)
            "cached_tokens": r["cached_tokens"],  # of prompt_tokens, read from the prefix cache
            "completion_tokens": r["completion_tokens"],
            "cost": format_credits(r["cost"]),
            "cost_micro_credits": r["cost"],
            "status": r["status"],
            "finish_reason": r["finish_reason"],
            "latency_ms": r["latency_ms"],
            "ttft_ms": r["ttft_ms"],
            "user": r["user"],
            "deployment": r["deployment"],
            "estimated": bool(r["estimated"]),
            "endpoint": r["endpoint"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    return JSONResponse({"object": "list", "data": data})

"""The usage page: per day and per model, filterable by dates and key, as a chart, a table and
a CSV file. Only the signed-in account's records are ever read."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import format_credits
from tokendock.storage.history import UsageLine
from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)
DEFAULT_DAYS = 30
CHART_W, CHART_H = 640, 160


@dataclass(frozen=True, slots=True)
class Filters:
    start: date
    end: date
    key_id: int | None
    problem: str | None = None

    @classmethod
    def of(cls, request: Request) -> Filters:
        today = datetime.now(UTC).date()
        params = request.query_params
        problem = None
        try:
            end = date.fromisoformat(params["to"]) if params.get("to") else today
            start = (
                date.fromisoformat(params["from"])
                if params.get("from")
                else end - timedelta(days=DEFAULT_DAYS - 1)
            )
            key_id = int(params["key"]) if params.get("key") else None
        except ValueError:
            problem = "Dates are YYYY-MM-DD and the key must be one of yours."
            end, start, key_id = today, today - timedelta(days=DEFAULT_DAYS - 1), None
        if start > end:
            start, end = end, start
        return cls(start, end, key_id, problem)


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str


def chart(lines: list[UsageLine], start: date, end: date) -> list[Bar]:
    """Cost per day as SVG bars (attributes only: the page's CSP forbids inline styles)."""
    days = (end - start).days + 1
    cost = {start + timedelta(days=i): 0 for i in range(days)}
    for line in lines:
        if line.day in cost:
            cost[line.day] += line.cost
    top = max(cost.values(), default=0) or 1
    width = max(1, CHART_W // max(days, 1))
    bars = []
    for i, (day, value) in enumerate(sorted(cost.items())):
        height = round(CHART_H * value / top)
        label = f"{day.isoformat()}: {format_credits(value)} credits"
        bars.append(Bar(i * width, CHART_H - height, max(1, width - 2), height, label))
    return bars


@router.get("/dashboard/usage")
async def usage_page(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, session, account = found
    keys = await services.accounts.store.list_keys(account.id)
    filters = Filters.of(request)
    key_id = filters.key_id if filters.key_id in {k.id for k in keys} else None
    lines = await services.history.usage_lines(
        account.id, start=filters.start, end=filters.end, key_id=key_id
    )
    totals = {
        "requests": sum(x.requests for x in lines),
        "prompt": sum(x.prompt_tokens for x in lines),
        "completion": sum(x.completion_tokens for x in lines),
        "cost": sum(x.cost for x in lines),
    }
    return render(
        request,
        "usage.html",
        session,
        status=400 if filters.problem else 200,
        page="usage",
        account=account,
        keys=keys,
        lines=lines,
        totals=totals,
        filters=filters,
        key_id=key_id,
        bars=chart(lines, filters.start, filters.end),
        chart_w=CHART_W,
        chart_h=CHART_H,
        error=filters.problem,
    )


@router.get("/dashboard/usage.csv")
async def usage_csv(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, _, account = found
    keys = {k.id for k in await services.accounts.store.list_keys(account.id)}
    filters = Filters.of(request)
    key_id = filters.key_id if filters.key_id in keys else None
    lines = await services.history.usage_lines(
        account.id, start=filters.start, end=filters.end, key_id=key_id
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["day", "model", "requests", "prompt_tokens", "completion_tokens", "cost_credits"]
    )
    for x in lines:
        writer.writerow(
            [
                x.day.isoformat(),
                x.model,
                x.requests,
                x.prompt_tokens,
                x.completion_tokens,
                format_credits(x.cost),
            ]
        )
    name = f"tokendock-usage-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="{name}"',
            "cache-control": "no-store",
        },
    )

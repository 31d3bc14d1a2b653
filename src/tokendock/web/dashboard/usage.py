"""The usage page: per day, model and endpoint (the API the requests came in by), filterable by
dates and key, as a chart, a table and a CSV file; what batches cost, apart (their requests'
endpoint is `batch.<endpoint>`); and the bytes the account keeps stored against its storage
quota. Only the signed-in account's records are ever read.

This router also carries the Batches and Files pages (batches.py)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from tokendock.billing.money import format_credits
from tokendock.services.storage import megabytes
from tokendock.storage.history import UsageLine
from tokendock.web.dashboard import batches
from tokendock.web.dashboard.views import render, signed_in

router = APIRouter(include_in_schema=False)
router.include_router(batches.router)  # the Batches and Files pages
BATCH = "batch."  # the endpoint of a batch line's usage row starts with it
DEFAULT_DAYS = 30
MAX_DAYS = 366  # one view, one CSV file: at most a year of days
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)  # dates outside are refused
WEEKLY_AFTER = 92  # longer ranges are charted per week: at most 53 bars
CHART_W, CHART_H = 640, 160


@dataclass(frozen=True, slots=True)
class Filters:
    """The page's dates and key. Bad or out-of-range dates are a message and a 400 with the
    default view; a range longer than MAX_DAYS is a message and a 400 with the MAX_DAYS ending
    at `to`. So a view never spans more than MAX_DAYS days, whatever the query string says."""

    start: date
    end: date
    key_id: int | None
    problem: str | None = None

    @classmethod
    def of(cls, request: Request) -> Filters:
        today = datetime.now(UTC).date()
        params = request.query_params
        default = (today - timedelta(days=DEFAULT_DAYS - 1), today)
        try:
            key_id = int(params["key"]) if params.get("key") else None
            end = date.fromisoformat(params["to"]) if params.get("to") else today
            first = date.fromisoformat(params["from"]) if params.get("from") else None
        except ValueError:
            return cls(*default, None, "Dates are YYYY-MM-DD and the key must be one of yours.")
        if not all(FIRST_DAY <= d <= LAST_DAY for d in (end, first or end)):
            return cls(*default, key_id, f"Dates are between {FIRST_DAY} and {LAST_DAY}.")
        start = first if first is not None else end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            start, end = end, start
        if (end - start).days >= MAX_DAYS:
            start = end - timedelta(days=MAX_DAYS - 1)
            return cls(start, end, key_id, f"Show at most {MAX_DAYS} days at a time.")
        return cls(start, end, key_id)


@dataclass(frozen=True, slots=True)
class Bar:
    x: int
    y: int
    width: int
    height: int
    label: str


def chart(lines: list[UsageLine], start: date, end: date) -> list[Bar]:
    """Cost per day — or per week beyond WEEKLY_AFTER days — as SVG bars (attributes only: the
    page's CSP forbids inline styles). At most MAX_DAYS / 7 + 1 bars for the longest view."""
    days = (end - start).days + 1
    step = 7 if days > WEEKLY_AFTER else 1
    count = (days + step - 1) // step
    cost = [0] * count
    for line in lines:
        if start <= line.day <= end:
            cost[(line.day - start).days // step] += line.cost
    top = max(cost, default=0) or 1
    width = max(1, CHART_W // max(count, 1))
    bars = []
    for i, value in enumerate(cost):
        height = round(CHART_H * value / top)
        first = start + timedelta(days=i * step)
        when = first.isoformat() if step == 1 else f"week of {first.isoformat()}"
        label = f"{when}: {format_credits(value)} credits"
        bars.append(Bar(i * width, CHART_H - height, max(1, width - 2), height, label))
    return bars


def is_batch(line: UsageLine) -> bool:
    return (line.endpoint or "").startswith(BATCH)


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
    units = {x.model: services.directory.unit(x.model) for x in lines}
    tokens = [x for x in lines if units[x.model] == "token"]  # seconds, images … are no tokens
    totals = {
        "requests": sum(x.requests for x in lines),
        "prompt": sum(x.prompt_tokens for x in tokens),
        "cached": sum(x.cached_tokens for x in tokens),
        "completion": sum(x.completion_tokens for x in tokens),
        "cost": sum(x.cost for x in lines),
        "batch_requests": sum(x.requests for x in lines if is_batch(x)),
        "batch_cost": sum(x.cost for x in lines if is_batch(x)),
    }
    quota = services.stored_chats.quota  # the one quota every stored object counts against
    used = await quota.used(account.id)
    return render(
        request,
        "usage.html",
        session,
        status=400 if filters.problem else 200,
        page="usage",
        account=account,
        keys=keys,
        lines=lines,
        units=units,
        totals=totals,
        filters=filters,
        key_id=key_id,
        bars=chart(lines, filters.start, filters.end),
        per_week=(filters.end - filters.start).days + 1 > WEEKLY_AFTER,
        chart_w=CHART_W,
        chart_h=CHART_H,
        error=filters.problem,
        storage_used=megabytes(used),
        storage_quota=None if quota.limit is None else megabytes(quota.limit),
    )


@router.get("/dashboard/usage.csv")
async def usage_csv(request: Request) -> Response:
    found = await signed_in(request)
    if isinstance(found, Response):
        return found
    services, _, account = found
    keys = {k.id for k in await services.accounts.store.list_keys(account.id)}
    filters = Filters.of(request)
    if filters.problem:
        headers = {"cache-control": "no-store"}
        return Response(filters.problem, status_code=400, media_type="text/plain", headers=headers)
    key_id = filters.key_id if filters.key_id in keys else None
    lines = await services.history.usage_lines(
        account.id, start=filters.start, end=filters.end, key_id=key_id
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "day",
            "model",
            "requests",
            "prompt_tokens",
            "completion_tokens",
            "cost_credits",
            "endpoint",
            "cached_tokens",  # of prompt_tokens, read from the prefix cache
        ]
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
                x.endpoint or "",
                x.cached_tokens,
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

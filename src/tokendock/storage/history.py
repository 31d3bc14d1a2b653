"""Read-only views of one account's money for the dashboard: credits in, usage by day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.db import reader
from tokendock.storage.tables import ledger_entries, usage_records

CREDIT_KINDS = ("grant", "topup", "redemption", "adjustment")


@dataclass(frozen=True, slots=True)
class CreditEntry:
    kind: str
    amount: int
    reference: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageDay:
    day: date
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: int


@dataclass(frozen=True, slots=True)
class UsageLine:
    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: int
    endpoint: str | None = None  # the API the requests came in by (None: not recorded)
    cached_tokens: int = 0  # of prompt_tokens, those read from the prefix cache


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


class HistoryStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = reader(engine)

    async def credits(self, account_id: int, limit: int = 100) -> list[CreditEntry]:
        query = (
            select(
                ledger_entries.c.kind,
                ledger_entries.c.amount,
                ledger_entries.c.reference,
                ledger_entries.c.created_at,
            )
            .where(
                ledger_entries.c.account_id == account_id,
                ledger_entries.c.kind.in_(CREDIT_KINDS),
            )
            .order_by(ledger_entries.c.id.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [CreditEntry(r.kind, int(r.amount), r.reference, r.created_at) for r in rows]

    async def usage_by_day(self, account_id: int, limit: int = 60) -> list[UsageDay]:
        day = func.date(usage_records.c.created_at).label("day")
        query = (
            select(
                day,
                func.count().label("requests"),
                func.sum(usage_records.c.prompt_tokens).label("prompt"),
                func.sum(usage_records.c.completion_tokens).label("completion"),
                func.sum(usage_records.c.cost).label("cost"),
            )
            .where(usage_records.c.account_id == account_id)
            .group_by(day)
            .order_by(day.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            UsageDay(
                _day(r.day),
                int(r.requests),
                int(r.prompt or 0),
                int(r.completion or 0),
                int(r.cost or 0),
            )
            for r in rows
        ]

    async def usage_lines(
        self,
        account_id: int,
        *,
        start: date | None = None,
        end: date | None = None,
        key_id: int | None = None,
        limit: int = 1000,
    ) -> list[UsageLine]:
        """Requests, tokens and cost per day, model and endpoint, newest day first; `start`
        and `end` are inclusive UTC days; `key_id` narrows to one of the account's keys."""
        day = func.date(usage_records.c.created_at).label("day")
        query = select(
            day,
            usage_records.c.model,
            usage_records.c.endpoint,
            func.count().label("requests"),
            func.sum(usage_records.c.prompt_tokens).label("prompt"),
            func.sum(usage_records.c.completion_tokens).label("completion"),
            func.sum(usage_records.c.cost).label("cost"),
            func.sum(usage_records.c.cached_tokens).label("cached"),
        ).where(usage_records.c.account_id == account_id)
        if start is not None:
            query = query.where(
                usage_records.c.created_at >= datetime.combine(start, time.min, tzinfo=UTC)
            )
        if end is not None:
            query = query.where(
                usage_records.c.created_at
                < datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC)
            )
        if key_id is not None:
            query = query.where(usage_records.c.key_id == key_id)
        query = (
            query.group_by(day, usage_records.c.model, usage_records.c.endpoint)
            .order_by(day.desc(), usage_records.c.model, usage_records.c.endpoint)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            UsageLine(
                _day(r.day),
                r.model,
                int(r.requests),
                int(r.prompt or 0),
                int(r.completion or 0),
                int(r.cost or 0),
                r.endpoint,
                int(r.cached or 0),
            )
            for r in rows
        ]

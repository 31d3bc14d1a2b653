"""Queries for the operator's pages: accounts across the server, codes, recent errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.db import reader
from tokendock.storage.tables import accounts, redemption_codes, usage_records


@dataclass(frozen=True, slots=True)
class AccountLine:
    id: int
    email: str
    is_admin: bool
    disabled: bool
    balance: int
    created_at: datetime


class AdminStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def accounts(self, search: str = "", limit: int = 100) -> list[AccountLine]:
        query = select(
            accounts.c.id,
            accounts.c.email,
            accounts.c.is_admin,
            accounts.c.disabled,
            accounts.c.balance,
            accounts.c.created_at,
        )
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(accounts.c.email.like(f"%{escaped}%", escape="\\"))
        query = query.order_by(accounts.c.id.desc()).limit(limit)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AccountLine(
                r.id, r.email, bool(r.is_admin), bool(r.disabled), int(r.balance), r.created_at
            )
            for r in rows
        ]

    async def codes(self, limit: int = 200) -> list[dict[str, Any]]:
        query = (
            select(
                redemption_codes.c.id,
                redemption_codes.c.last4,
                redemption_codes.c.amount,
                redemption_codes.c.created_at,
                redemption_codes.c.redeemed_at,
                accounts.c.email.label("redeemed_by"),
            )
            .join(accounts, accounts.c.id == redemption_codes.c.redeemed_by, isouter=True)
            .order_by(redemption_codes.c.id.desc())
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

    async def recent_errors(self, limit: int = 50) -> list[dict[str, Any]]:
        query = (
            select(
                usage_records.c.request_id,
                usage_records.c.model,
                usage_records.c.status,
                usage_records.c.deployment,
                usage_records.c.latency_ms,
                usage_records.c.created_at,
                accounts.c.email,
            )
            .join(accounts, accounts.c.id == usage_records.c.account_id)
            .where(usage_records.c.status != "ok")
            .order_by(usage_records.c.id.desc())
            .limit(limit)
        )
        async with self._reader.connect() as conn:
            return [dict(r) for r in (await conn.execute(query)).mappings().all()]

"""Queries for accounts, API keys, redemption codes and usage records."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage import access
from tokendock.storage.db import reader
from tokendock.storage.tables import accounts, api_keys, redemption_codes, usage_records


def utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything TokenDock stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    email: str
    password_hash: str
    is_admin: bool
    disabled: bool
    balance: int


def account_row(row: RowMapping) -> AccountRow:
    """An `accounts` row (or a join that selects its columns) as an AccountRow."""
    return AccountRow(
        row["id"],
        row["email"],
        row["password_hash"],
        row["is_admin"],
        row["disabled"],
        row["balance"],
    )


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: int
    account_id: int
    name: str
    prefix: str
    last4: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    spend_limit: int | None
    spent: int
    allowed_models: tuple[str, ...] | None
    account_disabled: bool = False
    # Rate-limit overrides (None = the tier's default), for the key and for its account.
    key_limits: tuple[int | None, int | None, int | None] = (None, None, None)
    account_limits: tuple[int | None, int | None, int | None] = (None, None, None)
    tier: str = "default"


def _key(row: Any, disabled: bool = False) -> KeyRow:
    models = row["allowed_models"]
    return KeyRow(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        prefix=row["prefix"],
        last4=row["last4"],
        created_at=utc(row["created_at"]),  # type: ignore[arg-type]
        expires_at=utc(row["expires_at"]),
        revoked_at=utc(row["revoked_at"]),
        last_used_at=utc(row["last_used_at"]),
        spend_limit=row["spend_limit"],
        spent=row["spent"],
        allowed_models=tuple(json.loads(models)) if models else None,
        account_disabled=disabled,
        key_limits=(row["rpm_limit"], row["tpm_limit"], row["concurrency_limit"]),
        account_limits=(
            row.get("account_rpm"),
            row.get("account_tpm"),
            row.get("account_concurrency"),
        ),
        tier=row.get("account_tier") or "default",
    )


class AccountStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def set_password(self, account_id: int, password_hash: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(password_hash=password_hash)
            )

    async def count_accounts(self) -> int:
        async with self._engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(accounts))).scalar_one()
            )

    async def create_account(self, email: str, password_hash: str, is_admin: bool) -> int:
        async with self._engine.begin() as conn:
            row = await conn.execute(
                insert(accounts)
                .values(
                    email=email,
                    password_hash=password_hash,
                    is_admin=is_admin,
                    disabled=False,
                    balance=0,
                    created_at=datetime.now(UTC),
                )
                .returning(accounts.c.id)
            )
            return int(row.scalar_one())

    async def account_by_email(self, email: str) -> AccountRow | None:
        return await self._account(accounts.c.email == email)

    async def account_by_id(self, account_id: int) -> AccountRow | None:
        return await self._account(accounts.c.id == account_id)

    async def _account(self, condition: Any) -> AccountRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(accounts).where(condition))).mappings().first()
        return None if row is None else account_row(row)

    async def create_key(
        self,
        account_id: int,
        *,
        name: str,
        digest: str,
        prefix: str,
        last4: str,
        expires_at: datetime | None,
        spend_limit: int | None,
        allowed_models: Sequence[str] | None,
    ) -> int:
        async with self._engine.begin() as conn:
            row = await conn.execute(
                insert(api_keys)
                .values(
                    account_id=account_id,
                    name=name,
                    digest=digest,
                    prefix=prefix,
                    last4=last4,
                    created_at=datetime.now(UTC),
                    # SQLite drops the offset: store every time as UTC.
                    expires_at=expires_at.astimezone(UTC) if expires_at else None,
                    spend_limit=spend_limit,
                    spent=0,
                    allowed_models=json.dumps(list(allowed_models)) if allowed_models else None,
                )
                .returning(api_keys.c.id)
            )
            return int(row.scalar_one())

    async def key_by_digest(self, digest: str) -> KeyRow | None:
        return await self._key_with_account(api_keys.c.digest == digest)

    async def key_by_id(self, account_id: int, key_id: int) -> KeyRow | None:
        return await self._key_with_account(
            (api_keys.c.id == key_id) & (api_keys.c.account_id == account_id)
        )

    async def _key_with_account(self, condition: Any) -> KeyRow | None:
        """One key with what authentication needs of its account (disabled, tier, limits)."""
        query = (
            select(
                api_keys,
                accounts.c.disabled,
                accounts.c.tier.label("account_tier"),
                accounts.c.rpm_limit.label("account_rpm"),
                accounts.c.tpm_limit.label("account_tpm"),
                accounts.c.concurrency_limit.label("account_concurrency"),
            )
            .join(accounts, accounts.c.id == api_keys.c.account_id)
            .where(condition)
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return None if row is None else _key(row, bool(row["disabled"]))

    async def list_keys(self, account_id: int) -> list[KeyRow]:
        query = select(api_keys).where(api_keys.c.account_id == account_id).order_by(api_keys.c.id)
        async with self._engine.connect() as conn:
            return [_key(r) for r in (await conn.execute(query)).mappings().all()]

    async def revoke_key(self, account_id: int, key_id: int) -> bool:
        """Only the owner's key, only once; False when there is no such live key. Every
        replica learns of it (`access_events`) and ends the key's running work."""
        async with self._engine.begin() as conn:
            row = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.account_id == account_id,
                    api_keys.c.revoked_at.is_(None),
                )
                .values(revoked_at=datetime.now(UTC))
            )
            if row.rowcount != 1:
                return False
            await access.record(conn, account_id, key_id, "key_revoked")
            return True

    async def set_disabled(self, account_id: int, disabled: bool) -> bool:
        """Disable (or enable) an account; False when there is none. Every replica learns of
        it (`access_events`): disabled, its running work ends."""
        async with self._engine.begin() as conn:
            row = await conn.execute(
                update(accounts).where(accounts.c.id == account_id).values(disabled=disabled)
            )
            if row.rowcount != 1:
                return False
            reason = "account_disabled" if disabled else "account_enabled"
            await access.record(conn, account_id, None, reason)
            return True

    async def create_code(self, digest: str, last4: str, amount: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(redemption_codes).values(
                    digest=digest, last4=last4, amount=amount, created_at=datetime.now(UTC)
                )
            )

    async def usage(self, account_id: int | None, limit: int) -> list[dict[str, Any]]:
        query = select(usage_records).order_by(usage_records.c.id.desc()).limit(limit)
        if account_id is not None:
            query = query.where(usage_records.c.account_id == account_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [{**r, "created_at": utc(r["created_at"])} for r in rows]

    async def set_limits(
        self,
        *,
        account_id: int | None = None,
        key_id: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        concurrent: int | None = None,
        tier: str | None = None,
    ) -> bool:
        """Set rate-limit overrides (only the given ones) on an account or a key."""
        table, row_id = (accounts, account_id) if account_id is not None else (api_keys, key_id)
        values: dict[str, Any] = {}
        for column, value in (
            ("rpm_limit", rpm),
            ("tpm_limit", tpm),
            ("concurrency_limit", concurrent),
        ):
            if value is not None:
                values[column] = value
        if tier is not None and table is accounts:
            values["tier"] = tier
        if not values:
            return True
        async with self._engine.begin() as conn:
            result = await conn.execute(update(table).where(table.c.id == row_id).values(**values))
            return result.rowcount == 1

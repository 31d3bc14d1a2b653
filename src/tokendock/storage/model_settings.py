"""Operator overrides of catalog models (table `model_settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.db import reader
from tokendock.storage.tables import model_settings


@dataclass(frozen=True, slots=True)
class ModelSetting:
    enabled: bool = True
    input_price: str | None = None  # credits per million tokens; None: the catalog's
    output_price: str | None = None
    cached_input_price: str | None = None  # None: the input price


class ModelSettingsStore:
    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._reader = reader(engine)

    async def all(self) -> dict[str, ModelSetting]:
        async with self._reader.connect() as conn:
            rows = (await conn.execute(select(model_settings))).all()
        return {
            r.model_id: ModelSetting(
                bool(r.enabled), r.input_price, r.output_price, r.cached_input_price
            )
            for r in rows
        }

    async def save(self, model_id: str, setting: ModelSetting) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(model_settings).where(model_settings.c.model_id == model_id))
            await conn.execute(
                insert(model_settings).values(
                    model_id=model_id,
                    enabled=setting.enabled,
                    input_price=setting.input_price,
                    output_price=setting.output_price,
                    cached_input_price=setting.cached_input_price,
                    updated_at=datetime.now(UTC),
                )
            )

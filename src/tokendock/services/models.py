"""Which catalog models are served, at which prices: the catalog file, then the operator's
overrides from the admin page (`model_settings`), refreshed every few seconds so every replica
follows them. Lookups are dictionary reads: this is on the request path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from tokendock.billing.money import parse_credits
from tokendock.billing.pricing import PER, Price
from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.errors import ModelNotFound, ModelUnpriced
from tokendock.inference.registry import ModelRegistry
from tokendock.storage.model_settings import ModelSetting, ModelSettingsStore

log = logging.getLogger(__name__)


class ModelDirectory:
    def __init__(self, registry: ModelRegistry, store: ModelSettingsStore):
        self._registry = registry
        self._store = store
        self._settings: dict[str, ModelSetting] = {}
        self._prices: dict[str, Price | None] = {}

    def enabled(self, model: str) -> bool:
        setting = self._settings.get(model)
        return setting is None or setting.enabled

    def check(self, model: str) -> ModelSpec:
        """The model's spec; 404 model_not_found when unknown or switched off."""
        spec = self._registry.spec(model)
        if not self.enabled(model):
            raise ModelNotFound(model)
        return spec

    def visible(self) -> Iterator[ModelSpec]:
        return (s for s in self._registry.specs() if self.enabled(s.id))

    def price_spec(self, spec: ModelSpec) -> PriceSpec | None:
        setting = self._settings.get(spec.id)
        if setting is not None and setting.input_price is not None:
            if spec.price is not None and spec.price.unit != "token":  # the price per unit
                return PriceSpec(unit=spec.price.unit, per_unit=setting.input_price)
            return PriceSpec(
                input=setting.input_price,
                output=setting.output_price or "0",
                cached_input=setting.cached_input_price,
            )
        return spec.price

    def unit(self, model: str) -> str:
        """What a usage row's prompt "tokens" of `model` count: "token", or the unit the
        catalog sells it by ("second", "character", "image", "request"); read from the
        catalog as it is now (a model no longer in it: "token")."""
        spec = self._registry.specs_by_id().get(model)
        return "token" if spec is None or spec.price is None else spec.price.unit

    def price(self, model: str) -> Price:
        if model not in self._prices:
            spec = self.price_spec(self._registry.spec(model))
            self._prices[model] = None if spec is None else _price(spec)
        price = self._prices[model]
        if price is None:
            raise ModelUnpriced(
                f"The model '{model}' has no price configured, so it cannot be billed; the "
                f'operator must set [models."{model}".price] in the catalog.'
            )
        return price

    def batch_price(self, model: str) -> Price:
        """A batch line's price: each of the catalog's explicit batch prices (`batch_input`,
        `batch_output`, `batch_cached_input`), and for each one not given, the model's price
        (the operator's override included) less `batch_discount` percent, rounded down to
        whole micro-credits per million tokens."""
        price = self.price(model)
        spec = self._registry.spec(model).price
        if spec is None:
            return price
        keep = 100 - spec.batch_discount

        def pick(explicit: str | None, full: int, what: str) -> int:
            return full * keep // 100 if explicit is None else parse_credits(explicit, what)

        cached = price.cached_per_million
        if spec.batch_cached_input is not None or cached is not None:
            cached = pick(
                spec.batch_cached_input,
                price.input_per_million if cached is None else cached,
                "batch cached input price",
            )
        return Price(
            pick(spec.batch_input, price.input_per_million, "batch input price"),
            pick(spec.batch_output, price.output_per_million, "batch output price"),
            cached,
        )

    async def save(self, model: str, setting: ModelSetting) -> None:
        self._registry.spec(model)  # 404 for an unknown model
        await self._store.save(model, setting)
        await self.refresh()

    async def refresh(self) -> None:
        self._settings = await self._store.all()
        self._prices = {}

    async def follow(self, every: float) -> None:
        """Re-read the overrides forever (other replicas may change them)."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.exception("reading model settings failed")
            await asyncio.sleep(every)


def _price(spec: PriceSpec) -> Price:
    """A token price; a price by another unit is one micro-credit amount per unit, which is
    the "input" price of a quantity counted as prompt tokens (Tally.unit)."""
    if spec.per_unit is not None:
        per_unit = parse_credits(spec.per_unit, f"price per {spec.unit}")
        return Price(per_unit * PER, 0)
    assert spec.input is not None and spec.output is not None, "PriceSpec checks it"
    return Price.parse(spec.input, spec.output, spec.cached_input)

"""A batch line's price (services/models.py `batch_price`): the model's prices less the
catalog's `batch_discount` (50 % by default), or the explicit batch prices, each on its own."""

from __future__ import annotations

from typing import Any

from tokendock.billing.pricing import Price
from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.services.models import ModelDirectory


class Registry:
    def __init__(self, spec: ModelSpec):
        self._spec = spec

    def spec(self, model: str) -> ModelSpec:
        return self._spec


def price_of(**price: Any) -> Price:
    spec = ModelSpec(id="m", package="p", price=PriceSpec(**price))
    directory = ModelDirectory(Registry(spec), None)  # type: ignore[arg-type]
    return directory.batch_price("m")


def test_half_price_by_default() -> None:
    assert price_of(input="0.15", output="0.6") == Price(75_000, 300_000, None)


def test_a_discount_rounds_down_to_whole_micro_credits() -> None:
    assert price_of(input="0.000003", output="1", batch_discount=50) == Price(1, 500_000, None)
    assert price_of(input="1", output="1", batch_discount=0) == Price(1_000_000, 1_000_000, None)


def test_the_cached_price_is_discounted_too() -> None:
    got = price_of(input="0.2", output="0.8", cached_input="0.05", batch_discount=40)
    assert got == Price(120_000, 480_000, 30_000)


def test_each_explicit_batch_price_stands_alone() -> None:
    only_output = price_of(input="0.2", output="0.8", batch_output="0.3")
    assert only_output == Price(100_000, 300_000, None)
    only_input = price_of(input="0.2", output="0.8", batch_input="0.01")
    assert only_input == Price(10_000, 400_000, None)
    cached = price_of(input="0.2", output="0.8", batch_cached_input="0.02")
    assert cached == Price(100_000, 400_000, 20_000)

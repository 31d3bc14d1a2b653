from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokendock.billing.money import MAX_AMOUNT, AmountError
from tokendock.billing.pricing import PER, Price

# (id, input µc/M, output µc/M, prompt tokens, completion tokens, cost in micro-credits);
# every expected cost is worked out by hand in the comment below its row.
TABLE: list[tuple[str, int, int, int, int, int]] = [
    ("module-docstring-example", 150_000, 600_000, 1_234, 567, 526),
    # 185,100,000 + 340,200,000 = 525,300,000 / 1e6 = 525.3 → 526
    ("zero-prices", 0, 0, 1_000_000, 1_000_000, 0),
    # a free model costs nothing however much it is used
    ("zero-input-price-only-prompt", 0, 600_000, 5_000, 0, 0),
    # free input, no output
    ("zero-tokens", 150_000, 600_000, 0, 0, 0),
    # an empty request costs nothing (no rounding up from zero)
    ("exact-division", 1_000_000, 2_000_000, 1_000, 500, 2_000),
    # 1,000,000,000 + 1,000,000,000 = 2e9 / 1e6 = 2,000 exactly: nothing to round
    ("exact-division-millions", 3_000_000, 15_000_000, 2_000_000, 1_000_000, 21_000_000),
    # 6e12 + 15e12 = 21e12 / 1e6 = 21,000,000 exactly (21 credits)
    ("one-millionth-rounds-up-to-1", 1, 0, 1, 0, 1),
    # 1 token × 1 µc/M = 0.000001 µc → 1 µc
    ("just-below-one-rounds-up", 0, 1, 0, 999_999, 1),
    # 999,999 / 1e6 = 0.999999 → 1
    ("just-above-one-rounds-up", 0, 1, 0, 1_000_001, 2),
    # 1,000,001 / 1e6 = 1.000001 → 2
    ("large-token-counts", 15_000_000, 60_000_000, 1_000_000_000, 500_000_000, 45_000_000_000),
    # 1.5e16 + 3e16 = 4.5e16 / 1e6 = 4.5e10 µc = 45,000 credits
    ("beyond-float-precision", 123_456_789, 987_654_321, 10**12 + 1, 3, 123_456_789_003_087),
    # 123,456,789,000,000,000,000 + 123,456,789 + 2,962,962,963
    # = 123,456,789,003,086,419,752 / 1e6 = 123,456,789,003,086.419752 → …087
    # (past 2**53: a float computation would already be off here)
]
CASES = [pytest.param(*row[1:], id=row[0]) for row in TABLE]


@pytest.mark.parametrize(("inp", "out", "prompt", "completion", "expected"), CASES)
def test_cost_worked_examples(
    inp: int, out: int, prompt: int, completion: int, expected: int
) -> None:
    cost = Price(inp, out).cost(prompt, completion)
    assert cost == expected
    assert type(cost) is int


def test_docstring_example_via_parse() -> None:
    price = Price.parse("0.15", "0.60")
    assert price == Price(150_000, 600_000)
    assert price.cost(1_234, 567) == 526


def test_parse_refuses_sub_micro_prices() -> None:
    with pytest.raises(AmountError, match="6 decimal"):
        Price.parse("0.0000001", "1")


def test_a_price_is_quoted_per_million_tokens() -> None:
    assert PER == 1_000_000
    # exactly one million tokens cost exactly the quoted price, in both directions
    assert Price(150_000, 600_000).cost(PER, 0) == 150_000
    assert Price(150_000, 600_000).cost(0, PER) == 600_000


def test_rounding_happens_once_per_request_not_per_part() -> None:
    price = Price(150_000, 600_000)
    # prompt alone 0.15 µc → 1; completion alone 0.6 µc → 1; together 0.75 µc → 1 (not 2)
    assert price.cost(1, 0) == 1
    assert price.cost(0, 1) == 1
    assert price.cost(1, 1) == 1


def test_two_requests_can_cost_more_than_one_request_of_their_sum() -> None:
    price = Price(150_000, 600_000)
    a, b = (1, 0), (1, 0)  # 0.15 µc each
    separately = price.cost(*a) + price.cost(*b)
    together = price.cost(a[0] + b[0], a[1] + b[1])
    assert separately == 2  # each request rounds up on its own
    assert together == 1  # 0.30 µc → 1
    assert separately != together

    # Over many tiny requests the difference is large: 1,000 × (1 token) vs 1,000 tokens once.
    assert sum(price.cost(1, 0) for _ in range(1_000)) == 1_000
    assert price.cost(1_000, 0) == 150


def test_rounding_up_never_undercharges() -> None:
    # cost ≥ exact cost, and cost - exact cost < 1 µc, over a grid of prices and token counts
    for inp in (0, 1, 7, 150_000, 999_999, 1_000_000, 2_500_001):
        for out in (0, 3, 600_000, 15_000_001):
            for prompt in (0, 1, 13, 999, 1_234, 100_003):
                for completion in (0, 1, 567, 4_096):
                    total = prompt * inp + completion * out
                    cost = Price(inp, out).cost(prompt, completion)
                    assert cost * PER >= total
                    assert (cost - 1) * PER < total or cost == 0


# -- cached prompt tokens (prefix caching) ---------------------------------------------------


def test_cached_docstring_example() -> None:
    price = Price.parse("0.15", "0.60", "0.03")
    assert price == Price(150_000, 600_000, 30_000)
    # (234 × 150,000 + 1,000 × 30,000 + 567 × 600,000) / 1e6 = 405.3 → 406
    assert price.cost(1_234, 567, cached=1_000) == 406
    assert price.cost(1_234, 567) == 526  # nothing cached: the plain rule


def test_without_a_cached_price_cached_tokens_cost_the_input_price() -> None:
    price = Price.parse("0.15", "0.60")
    assert price.cached_per_million is None
    assert price.cost(1_234, 567, cached=1_000) == price.cost(1_234, 567) == 526


def test_cached_rounds_once_per_request() -> None:
    # one uncached token at 1 µc/M and one cached for free: 0.000001 µc → 1 µc
    price = Price(1, 0, 0)
    assert price.cost(2, 0, cached=1) == 1
    assert price.cost(2, 0, cached=2) == 0  # a free cache: nothing to round up
    assert Price(3, 0, 1).cost(1_000_000, 0, cached=500_000) == 2  # 1.5 + 0.5 = 2 exactly


def test_cached_beyond_the_prompt_is_the_whole_prompt() -> None:
    price = Price(1_000_000, 0, 250_000)
    assert price.cost(4, 0, cached=99) == price.cost(4, 0, cached=4) == 1
    assert price.cost(4, 0, cached=-3) == price.cost(4, 0) == 4


def test_worst_is_the_hold_whatever_the_cache() -> None:
    cheap = Price(1_000_000, 2_000_000, 250_000)
    assert cheap.worst(7, 3) == cheap.cost(7, 3) == 13  # no discount at hold time
    dear = Price(1_000_000, 2_000_000, 3_000_000)  # an odd catalog: cache dearer than input
    assert dear.worst(7, 3) == dear.cost(7, 3, cached=7) == 27


prices = st.integers(0, MAX_AMOUNT)
counts = st.integers(0, 10**12)


@given(prices, prices, prices, counts, counts, st.integers(0, 10**12))
def test_cached_never_costs_more_when_the_cached_price_is_lower(
    inp: int, out: int, cached_price: int, prompt: int, completion: int, cached: int
) -> None:
    cached_price = min(cached_price, inp)
    price = Price(inp, out, cached_price)
    cost = price.cost(prompt, completion, cached)
    assert type(cost) is int
    assert cost <= price.cost(prompt, completion) == Price(inp, out).cost(prompt, completion)
    assert cost <= price.worst(prompt, completion)
    # the exact ceiling of the exact sum: no float, one rounding
    hit = min(cached, prompt)
    total = (prompt - hit) * inp + hit * cached_price + completion * out
    assert cost * PER >= total
    assert (cost - 1) * PER < total or cost == 0 == total


@given(prices, prices, prices, counts, counts, counts)
def test_worst_bounds_every_cache_outcome(
    inp: int, out: int, cached_price: int, prompt: int, completion: int, cached: int
) -> None:
    price = Price(inp, out, cached_price)
    assert price.cost(prompt, completion, cached) <= price.worst(prompt, completion)

"""Prices per million tokens, and the cost of a request.

Rounding rule: a request's cost is rounded UP to the next whole micro-credit, once per request:
    cost = ceil(((prompt_tokens − cached_tokens) × input_price + cached_tokens × cached_price
                 + completion_tokens × output_price) / 1,000,000)
where prices are micro-credits per million tokens, each at most money.MAX_AMOUNT (a cost above
MAX_BALANCE is never held: the ledger refuses it before touching the database), cached_tokens
are the prompt tokens served from a KV cache (prefix caching; 0 ≤ cached ≤ prompt) and the
cached price is the input price unless the catalog names one (`cached_input`). Worked example:
input 0.15 credits/M (150,000 µc/M), cached input 0.03 credits/M (30,000 µc/M), output 0.60
credits/M (600,000 µc/M), 1,234 prompt tokens of which 1,000 cached + 567 completion tokens →
(234 × 150,000 + 1,000 × 30,000 + 567 × 600,000) / 1e6 = (35,100,000 + 30,000,000 +
340,200,000) / 1e6 = 405.3 → 406 micro-credits (none cached: 525.3 → 526).
"""

from __future__ import annotations

from dataclasses import dataclass

from tokendock.billing.money import parse_credits

PER = 1_000_000  # tokens a price is quoted for


@dataclass(frozen=True, slots=True)
class Price:
    input_per_million: int  # micro-credits per 1M prompt tokens
    output_per_million: int  # micro-credits per 1M completion tokens
    cached_per_million: int | None = None  # per 1M prompt tokens read from cache; None: input

    @classmethod
    def parse(cls, input_credits: str, output_credits: str, cached: str | None = None) -> Price:
        return cls(
            parse_credits(input_credits, "input price"),
            parse_credits(output_credits, "output price"),
            None if cached is None else parse_credits(cached, "cached input price"),
        )

    def cost(self, prompt_tokens: int, completion_tokens: int, cached: int = 0) -> int:
        """`cached` of the `prompt_tokens` at the cached price (clamped to 0…prompt_tokens)."""
        total = prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        if cached > 0 and self.cached_per_million is not None:
            cached = min(cached, prompt_tokens)
            total -= cached * (self.input_per_million - self.cached_per_million)
        return -(-total // PER)  # ceiling division on integers

    def worst(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The most `cost` can be for these counts, whatever the cache held (what a hold takes):
        no cache discount, or every prompt token cached if the cached price is the higher."""
        cached = self.cached_per_million or 0
        dearer = prompt_tokens if cached > self.input_per_million else 0
        return self.cost(prompt_tokens, completion_tokens, dearer)

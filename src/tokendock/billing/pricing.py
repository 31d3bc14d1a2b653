"""Prices per million tokens, and the cost of a request.

Rounding rule: a request's cost is rounded UP to the next whole micro-credit, once per request:
    cost = ceil((prompt_tokens × input_price + completion_tokens × output_price) / 1,000,000)
where prices are micro-credits per million tokens, each at most money.MAX_AMOUNT (a cost above
MAX_BALANCE is never held: the ledger refuses it before touching the database). Worked example:
input 0.15 credits/M (150,000 µc/M), output 0.60 credits/M (600,000 µc/M), 1,234 prompt + 567
completion tokens → (185,100,000 + 340,200,000) / 1e6 = 525.3 → 526 micro-credits.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokendock.billing.money import parse_credits

PER = 1_000_000  # tokens a price is quoted for


@dataclass(frozen=True, slots=True)
class Price:
    input_per_million: int  # micro-credits per 1M prompt tokens
    output_per_million: int  # micro-credits per 1M completion tokens

    @classmethod
    def parse(cls, input_credits: str, output_credits: str) -> Price:
        return cls(
            parse_credits(input_credits, "input price"),
            parse_credits(output_credits, "output price"),
        )

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        total = prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million
        return -(-total // PER)  # ceiling division on integers

"""Money is an integer number of micro-credits: 1 credit = 1 USD = 1,000,000 micro-credits.

No float ever touches an amount. Text from people ("12.50") is parsed exactly with Decimal and
refused when it has more than six decimals.

Bounds: every amount a person can enter (a grant, a redemption code, a key's spend limit, a
price per million tokens) is at most MAX_AMOUNT, and the ledger keeps every account's balance
plus its open holds at most MAX_BALANCE (a grant or redemption that would pass it is refused).
Both are 10^15 micro-credits (1,000,000,000 credits), four orders of magnitude below what a
BIGINT holds (2^63 - 1 ≈ 9.2 × 10^18), so no sum or product the ledger forms can overflow:
a settlement charges at most its hold plus the balance, 2 × 10^15.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

MICRO = 1_000_000
MAX_BALANCE = 10**15  # micro-credits (1,000,000,000 credits): one account's balance + open holds
MAX_AMOUNT = MAX_BALANCE  # one grant, code, spend limit or price per million tokens
_EXACT = Context(prec=100)  # enough digits that multiplying never rounds


class AmountError(ValueError):
    """Text that is not an exact, non-negative amount of credits within MAX_AMOUNT."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


def parse_credits(text: str | int, field: str | None = None) -> int:
    """`text` credits as micro-credits. `field` names what was given in the error message."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise AmountError(f"not an amount of credits: {str(text)[:40]!r}", field) from exc
    if not value.is_finite() or value < 0:
        raise AmountError(f"must be a non-negative number of credits: {str(text)[:40]!r}", field)
    if value > MAX_AMOUNT // MICRO:
        raise AmountError(
            f"at most {format_credits(MAX_AMOUNT)} credits: {str(text)[:40]!r}", field
        )
    micro = _EXACT.multiply(value, Decimal(MICRO))
    if micro != micro.to_integral_value(context=_EXACT):
        raise AmountError(f"at most 6 decimal places (1 micro-credit): {str(text)[:40]!r}", field)
    return int(micro)


def format_credits(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"

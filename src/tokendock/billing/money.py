"""Money is an integer number of micro-credits: 1 credit = 1 USD = 1,000,000 micro-credits.

No float ever touches an amount. Text from people ("12.50") is parsed exactly with Decimal and
refused when it has more than six decimals.
"""

from __future__ import annotations

from decimal import Context, Decimal, InvalidOperation

MICRO = 1_000_000
MAX_MICRO = 2**63 - 1  # what a BIGINT column holds
_EXACT = Context(prec=100)  # enough digits that multiplying never rounds


class AmountError(ValueError):
    """Text that is not an exact, non-negative amount of credits."""


def parse_credits(text: str | int) -> int:
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation as exc:
        raise AmountError(f"not an amount of credits: {text!r}") from exc
    if not value.is_finite() or value < 0:
        raise AmountError(f"amount must be a non-negative number of credits: {text!r}")
    micro = _EXACT.multiply(value, Decimal(MICRO))
    if micro != micro.to_integral_value(context=_EXACT):
        raise AmountError(f"at most 6 decimal places (1 micro-credit): {text!r}")
    if micro > MAX_MICRO:
        raise AmountError(f"amount too large: {text!r}")
    return int(micro)


def format_credits(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"

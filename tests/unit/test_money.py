from __future__ import annotations

from decimal import Decimal

import pytest

from tokendock.billing.money import (
    MAX_AMOUNT,
    MICRO,
    AmountError,
    format_credits,
    parse_credits,
)

# --- parse_credits: exact amounts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("12.5", 12_500_000),
        ("12.50", 12_500_000),
        ("0.000001", 1),
        ("0.0000010", 1),  # a trailing zero past the 6th decimal changes nothing: still exact
        ("0", 0),
        ("0.0", 0),
        ("-0", 0),  # negative zero is zero, not a negative amount
        ("1", MICRO),
        ("0.1", 100_000),  # not 100_000.00000000001: no float on the way
        ("0.3", 300_000),
        ("123456.789012", 123_456_789_012),
        ("1e-6", 1),
        ("1E+2", 100 * MICRO),
        # The largest amount accepted (MAX_AMOUNT), to the micro-credit.
        ("1000000000", MAX_AMOUNT),
        ("999999999.999999", MAX_AMOUNT - 1),
    ],
)
def test_parse_credits_is_exact(text: str, micro: int) -> None:
    assert parse_credits(text) == micro


@pytest.mark.parametrize(("value", "micro"), [(0, 0), (1, MICRO), (25, 25 * MICRO)])
def test_parse_credits_accepts_ints(value: int, micro: int) -> None:
    assert parse_credits(value) == micro
    assert isinstance(parse_credits(value), int)


@pytest.mark.parametrize("text", [" 12.5", "12.5 ", "\t12.5\n", "  12.500000  "])
def test_parse_credits_strips_whitespace(text: str) -> None:
    assert parse_credits(text) == 12_500_000


def test_parse_credits_returns_a_plain_int() -> None:
    assert type(parse_credits("3.25")) is int


# --- parse_credits: refusals ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["0.0000001", "1.1234567", "12.5000001", "0.00000099"])
def test_parse_credits_refuses_a_seventh_decimal(text: str) -> None:
    with pytest.raises(AmountError, match="6 decimal"):
        parse_credits(text)


@pytest.mark.parametrize("text", ["-1", "-0.000001", "-12.5", " -3 ", "-1e-6"])
def test_parse_credits_refuses_negatives(text: str) -> None:
    with pytest.raises(AmountError, match="non-negative"):
        parse_credits(text)


def test_parse_credits_refuses_negative_ints() -> None:
    with pytest.raises(AmountError):
        parse_credits(-5)


@pytest.mark.parametrize(
    "text", ["NaN", "nan", "sNaN", "-NaN", "inf", "Infinity", "-inf", "-Infinity"]
)
def test_parse_credits_refuses_nan_and_infinity(text: str) -> None:
    with pytest.raises(AmountError):
        parse_credits(text)


@pytest.mark.parametrize(
    "text", ["", "   ", "abc", "12.5 credits", "$5", "1,000", "1.2.3", "0x10", "½", "1 2", "--1"]
)
def test_parse_credits_refuses_garbage(text: str) -> None:
    with pytest.raises(AmountError, match="not an amount"):
        parse_credits(text)


@pytest.mark.parametrize(
    "text", ["1000000000.000001", "9223372036854.775807", "9223372036855", "1e30", "1e999999"]
)
def test_parse_credits_refuses_amounts_above_the_maximum(text: str) -> None:
    # Above 10^9 credits (10^15 micro-credits): a BIGINT would still hold some of these, but a
    # sum of them would not (a balance past 2^63 became a SQLite REAL and broke verify).
    with pytest.raises(AmountError, match=r"at most 1000000000\.000000 credits"):
        parse_credits(text)


def test_amount_error_names_the_field() -> None:
    with pytest.raises(AmountError, match=r"^amount: at most") as caught:
        parse_credits("1e12", "amount")
    assert caught.value.field == "amount"


def test_amount_error_is_a_value_error() -> None:
    # Callers (the CLI, settings validation) may catch ValueError generically.
    assert issubclass(AmountError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        # 25 integer digits + a 7th decimal: 32 significant digits. Decimal's default context
        # keeps 28, so `value * MICRO` is rounded BEFORE the exactness check and the sub-micro
        # fraction silently disappears instead of being refused.
        "1000000000000000000000000.0000001",
        "12345678901234567890123.4567891",
    ],
)
def test_parse_credits_refuses_a_seventh_decimal_on_huge_amounts(text: str) -> None:
    try:
        got = parse_credits(text)
    except AmountError:
        return
    pytest.fail(
        f"BUG (billing/money.py parse_credits): {text!r} has a non-zero 7th decimal and must "
        f"be refused ('at most 6 decimal places'), but it was accepted as {got} micro-credits "
        "(not even the integer part survives exactly). `value * MICRO` runs in Decimal's "
        "default 28-digit context and rounds before the integrality check."
    )


# --- format_credits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (999_999, "0.999999"),
        (MICRO, "1.000000"),
        (12_500_000, "12.500000"),
        (123_456_789_012, "123456.789012"),
        (-1, "-0.000001"),
        (-999_999, "-0.999999"),
        (-MICRO, "-1.000000"),
        (-12_500_000, "-12.500000"),
        (2**63 - 1, "9223372036854.775807"),
    ],
)
def test_format_credits(micro: int, text: str) -> None:
    assert format_credits(micro) == text


ROUND_TRIP = [0, 1, 7, 999_999, MICRO, MICRO + 1, 12_500_000, 10**15 - 3, MAX_AMOUNT]


@pytest.mark.parametrize("micro", ROUND_TRIP)
def test_format_then_parse_round_trips(micro: int) -> None:
    assert parse_credits(format_credits(micro)) == micro


@pytest.mark.parametrize("micro", ROUND_TRIP[1:])
def test_negative_amounts_format_as_the_negated_positive(micro: int) -> None:
    text = format_credits(-micro)
    assert text == "-" + format_credits(micro)
    # parse_credits refuses negatives by design; the text is still the exact value.
    assert Decimal(text) * MICRO == -micro
    assert -parse_credits(text.removeprefix("-")) == -micro
    with pytest.raises(AmountError):
        parse_credits(text)


@pytest.mark.parametrize("text", ["0", "12.5", "0.000001", "7.000000", "100.1"])
def test_parse_then_format_gives_the_canonical_text(text: str) -> None:
    assert Decimal(format_credits(parse_credits(text))) == Decimal(text)
    assert len(format_credits(parse_credits(text)).split(".")[1]) == 6

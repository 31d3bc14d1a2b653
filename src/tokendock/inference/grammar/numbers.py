"""GBNF for decimal integers in a range (JSON Schema `minimum` / `maximum` on an integer):
digit by digit, one alternative per width, up to MAX_DIGITS digits."""

from __future__ import annotations

from tokendock.inference.grammar.terms import MAX_DIGITS, literal


def int_range(lo: int | None, hi: int | None) -> str | None:
    """GBNF for the decimal integers in [lo, hi] (None = unbounded on that side, up to
    MAX_DIGITS digits); None when the range is empty."""
    limit = 10**MAX_DIGITS - 1
    lo = None if lo is not None and lo < -limit else lo
    hi = None if hi is not None and hi > limit else hi
    if (lo is not None and lo > limit) or (hi is not None and hi < -limit):
        return None
    if lo is not None and hi is not None and lo > hi:
        return None
    alts = []
    if hi is None or hi >= 0:
        alts.append(_uint_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        neg = _uint_range(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
        alts.append(f'"-" {_group(neg)}')
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def _uint_range(lo: int, hi: int | None) -> str:
    alts = []
    top = len(str(hi)) if hi is not None else MAX_DIGITS
    for width in range(len(str(lo)), top + 1):
        a = max(lo, 10 ** (width - 1) if width > 1 else 0)
        if hi is None and width > len(str(lo)):
            alts.append(f"[1-9] [0-9]{{{width - 1},{MAX_DIGITS - 1}}}")
            break
        b = min(hi, 10**width - 1) if hi is not None else 10**width - 1
        if a <= b:
            alts.append(_same_width(str(a), str(b)))
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def _same_width(a: str, b: str) -> str:
    if a == b:
        return literal(a)
    if a[0] == b[0]:
        return f"{literal(a[0])} {_group(_same_width(a[1:], b[1:]))}"
    rest = len(a) - 1
    digits = f" [0-9]{{{rest}}}" if rest else ""
    low, high = int(a[0]), int(b[0])
    alts = []
    if a[1:] != "0" * rest:
        alts.append(f"{literal(a[0])} {_group(_same_width(a[1:], '9' * rest))}")
        low += 1
    tail = None
    if b[1:] != "9" * rest:
        tail = f"{literal(b[0])} {_group(_same_width('0' * rest, b[1:]))}"
        high -= 1
    if low <= high:
        alts.append(f"[{low}-{high}]{digits}")
    if tail:
        alts.append(tail)
    return alts[0] if len(alts) == 1 else "( " + " | ".join(alts) + " )"


def _group(text: str) -> str:
    return f"( {text} )"

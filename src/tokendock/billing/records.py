"""The ledger's values: what a hold and a settlement return, the usage row a settlement writes,
and the codes its fast paths report. A leaf of billing: the ledger and every fast path import
it, it imports none of them (billing/ledger.py states the rules)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# Outcome of a hold: (HELD, balance after) or (NO_CREDIT, balance now) or (OVER_LIMIT, 0).
HELD = 0
NO_CREDIT = 1
OVER_LIMIT = 2

# Hold states (holds.status). A hold leaves OPEN exactly once: SETTLED by its request (or
# released by its own process), or SWEPT by a sweeper because its owner stopped renewing it.
# A SWEPT hold whose request still settles (the owner was alive after all) becomes LATE: what
# was produced is then charged as a plain debit, at most once.
OPEN, SETTLED, SWEPT, LATE = "open", "settled", "swept", "late"

# Settlement result: (charged in total, balance after, late), or None when nothing changed.
Settled = tuple[int, int, bool]


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: int
    key_id: int | None
    amount: int
    balance_after: int  # available balance right after the hold
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    status: str
    finish_reason: str | None
    latency_ms: int
    ttft_ms: int | None
    user: str | None
    deployment: str | None = None  # the upstream that served it; None for the embedded engine
    estimated: bool = False  # token counts estimated (an upstream that reported no usage)
    endpoint: str | None = None  # the API it came in by (InferenceRequest.endpoint)
    cached_tokens: int = 0  # of prompt_tokens, those read from a KV cache (prefix caching)


@dataclass(frozen=True, slots=True)
class Settlement:
    charged: int  # in total: captured from the hold plus any debit above it
    balance: int  # available balance after
    uncollected: int = 0  # asked but not charged: the balance or the key's limit was short
    late: bool = False  # a sweeper had released the hold; charged as a plain debit


# The usage row's free-text columns and their widths (storage/tables.py `usage_records`;
# tests/unit/test_usage_fit.py keeps the two in step). Money never depends on these: a
# settlement cuts them to fit (`storable`) and, should the row still be refused, writes it
# without them (`stripped`), and charges either way.
TEXT_WIDTHS = {
    "model": 200,
    "status": 32,
    "finish_reason": 32,
    "user": 256,
    "deployment": 200,
    "endpoint": 32,
}
UNKNOWN = "unknown"  # a NOT NULL text column's value in a stripped row


def _fits(text: str, width: int) -> bool:
    return len(text) <= width and (text.isascii() or _encodes(text)) and "\x00" not in text


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fit(text: str, width: int) -> str:
    """`text` without NUL characters and lone surrogates (PostgreSQL's text cannot hold
    them), cut to `width` characters."""
    clean = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return clean[:width]


def storable(usage: UsageRow) -> tuple[UsageRow, list[str]]:
    """`usage` with every free-text field fit for its column, and the names of those changed.
    A few string checks: the usage rows the server itself writes pass unchanged."""
    changed: dict[str, Any] = {}  # str values; Any for dataclasses.replace's typing
    for name, width in TEXT_WIDTHS.items():
        text = getattr(usage, name)
        if text is not None and not _fits(text, width):
            changed[name] = _fit(text, width)
    if not changed:
        return usage, []
    return replace(usage, **changed), list(changed)


INT32_MAX = 2**31 - 1  # the usage row's INTEGER columns


def _int32(value: int) -> int:
    return min(max(value, 0), INT32_MAX)


def stripped(usage: UsageRow) -> UsageRow:
    """`usage` without its free-text fields (the nullable ones None, the others a plain word)
    and with its counts within their INTEGER columns: what a settlement writes when the
    database refused the row as it was. The request id, counts and timings stay, so the
    charge still has its row."""
    return replace(
        usage,
        model=usage.model if _fits(usage.model, TEXT_WIDTHS["model"]) else UNKNOWN,
        status=usage.status if _fits(usage.status, TEXT_WIDTHS["status"]) else UNKNOWN,
        finish_reason=None,
        user=None,
        deployment=None,
        endpoint=None,
        prompt_tokens=_int32(usage.prompt_tokens),
        completion_tokens=_int32(usage.completion_tokens),
        cached_tokens=_int32(usage.cached_tokens),
        latency_ms=_int32(usage.latency_ms),
        ttft_ms=None if usage.ttft_ms is None else _int32(usage.ttft_ms),
    )


@dataclass(slots=True)
class LineResult:
    """A batch line's result, written in the SAME transaction as its settlement, and only while
    the line's claim still holds: `lease` is the fencing token its claim took
    (storage/batch_sql.py). `won` says, afterwards, whether the claim held (False: another claim
    took the line; the settlement was not made and the hold is released without charge)."""

    batch_id: str
    line: int
    lease: int
    outcome: str  # succeeded, errored
    result: str  # JSON text: {"status_code", "body"} (storage/batches.py reads it)
    won: bool | None = None
    charged: int = 0

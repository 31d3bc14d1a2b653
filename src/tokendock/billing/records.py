"""The ledger's values: what a hold and a settlement return, the usage row a settlement writes,
and the codes its fast paths report. A leaf of billing: the ledger and every fast path import
it, it imports none of them (billing/ledger.py states the rules)."""

from __future__ import annotations

from dataclasses import dataclass

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

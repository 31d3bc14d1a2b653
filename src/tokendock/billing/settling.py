"""One settlement, made so that money never depends on an auxiliary write.

A settlement charges the hold and writes the usage row in ONE transaction (billing/ledger.py,
rule 4): if the database refused the row, the charge rolled back with it, and the hold was left
for the sweep to hand back — free generation (issue 18: a NUL in `user` on PostgreSQL). So:

- the row's free text (a client's `user`, an upstream's `finish_reason`, a deployment name) is
  cut to fit its columns first (`records.storable`): a few string checks, nothing for the rows
  the server writes itself;
- should the database still refuse a value (SQLSTATE class 22, a string its driver cannot
  encode), the transaction rolled back whole and the hold is still open, so the settlement is
  made again with the row's free text left out (`records.stripped`): charged, with its row,
  logged as an error;
- a connection or lock failure is tried once more after RETRY_PAUSE.

Settling again is always safe: the guarded `UPDATE holds … WHERE status = 'open'` lets one
settlement through, and one that finds the hold settled changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from tokendock.billing import fastpath
from tokendock.billing.fastpath import FastPath
from tokendock.billing.records import Hold, LineResult, Settled, UsageRow, storable, stripped

log = logging.getLogger(__name__)

RETRY_PAUSE = 0.5  # seconds before settling again after a connection or lock failure


async def settle(
    fast: FastPath,
    hold: Hold,
    charge: int,
    usage: UsageRow | None,
    at: datetime,
    fence: LineResult | None = None,
) -> Settled | None:
    """`fast.settle` for `hold`, with the usage row fit to be written (see above); `fence`: a
    batch line's result, written in the same transaction while its claim holds."""
    line: dict[str, Any] = {} if fence is None else {"fence": fence}  # a batch line only
    if usage is not None:
        usage, changed = storable(usage)
        if changed:
            log.warning("request %s: usage fields %s cut to fit", usage.request_id, changed)
    try:
        return await fast.settle(
            hold.id, hold.account_id, hold.key_id, hold.amount, charge, at, usage, **line
        )
    except Exception as exc:
        if fastpath.transient(exc):
            log.warning("request %s: settling failed (%r); trying again", hold.request_id, exc)
            await asyncio.sleep(RETRY_PAUSE)
            return await fast.settle(
                hold.id, hold.account_id, hold.key_id, hold.amount, charge, at, usage, **line
            )
        if usage is None or not fastpath.refused_data(exc):
            raise
        log.error(
            "request %s: the database refused its usage row (%s: %s); charged with the row's "
            "free-text fields left out",
            usage.request_id,
            type(exc).__name__,
            str(exc)[:200],
        )
        return await fast.settle(
            hold.id,
            hold.account_id,
            hold.key_id,
            hold.amount,
            charge,
            at,
            stripped(usage),
            **line,
        )

"""The ledger's transactions as plain `sqlite3` jobs, run by billing/fastpath_sqlite.py's writer.

Each job takes a cursor inside an open transaction (or SAVEPOINT) and returns (result, keep):
keep=False rolls the job back alone. The statements are the ledger's (billing/ledger.py states
the rules), the same as PostgreSQL's td_hold (migration 0003) and td_settle (0007), statement
for statement: the conditional debit, the guarded `UPDATE holds … WHERE status = 'open'`,
append-only entries with unique idempotency keys. Datetimes are written as SQLAlchemy writes
them (`SQLITE_DATETIME`, UTC), so the rest of the code reads and compares them as before.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from tokendock.billing.fastpath import HELD, NO_CREDIT, OVER_LIMIT, SETTLED, SWEPT, Settled
from tokendock.storage.db import SQLITE_DATETIME

if TYPE_CHECKING:
    from tokendock.billing.ledger import UsageRow

DEBIT = (
    "UPDATE accounts SET balance = balance - ? "
    "WHERE id = ? AND balance >= ? AND disabled = 0 RETURNING balance"
)
BALANCE = "SELECT balance FROM accounts WHERE id = ?"
RESERVE = (
    "UPDATE api_keys SET spent = spent + ? "
    "WHERE id = ? AND (spend_limit IS NULL OR spent + ? <= spend_limit)"
)
INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, key_id, amount, status, request_id, owner, "
    "created_at, expires_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?)"
)
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_NOTE = (
    "INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key, "
    "reference, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
CLOSE_HOLD = "UPDATE holds SET status = ?, captured = ? WHERE id = ? AND status = 'open'"
MARK_LATE = "UPDATE holds SET status = 'late' WHERE id = ? AND status = 'swept'"
REFUND = "UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING balance"
DEBIT_ANY = "UPDATE accounts SET balance = balance - ? WHERE id = ? RETURNING balance"
UNRESERVE = "UPDATE api_keys SET spent = spent - ? WHERE id = ?"
UNRESERVE_USED = "UPDATE api_keys SET spent = spent - ?, last_used_at = ? WHERE id = ?"
KEY_ROOM = "SELECT spend_limit - spent FROM api_keys WHERE id = ?"
RESERVE_ANY = "UPDATE api_keys SET spent = spent + ?, last_used_at = ? WHERE id = ?"
RENEW = (
    "UPDATE holds SET expires_at = ? WHERE owner = ? AND status = 'open' "
    "AND id IN (SELECT value FROM json_each(?))"
)
INSERT_USAGE = (
    "INSERT INTO usage_records (request_id, account_id, key_id, model, prompt_tokens, "
    'completion_tokens, cost, status, finish_reason, latency_ms, ttft_ms, "user", created_at, '
    "deployment, estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def hold(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    amount: int,
    request_id: str,
    owner: str,
    at: datetime,
    expires_at: datetime,
) -> tuple[tuple[int, int], bool]:
    """((outcome, balance), keep): keep=False rolls the job's savepoint back."""
    rows = cur.execute(DEBIT, (amount, account_id, amount)).fetchall()
    if not rows:
        row = cur.execute(BALANCE, (account_id,)).fetchone()
        return (NO_CREDIT, int(row[0]) if row else 0), False
    if key_id is not None:
        cur.execute(RESERVE, (amount, key_id, amount))
        if cur.rowcount != 1:
            return (OVER_LIMIT, 0), False  # the rollback undoes the debit above
    created = at.strftime(SQLITE_DATETIME)
    cur.execute(
        INSERT_HOLD,
        (
            hold_id,
            account_id,
            key_id,
            amount,
            request_id,
            owner,
            created,
            expires_at.strftime(SQLITE_DATETIME),
        ),
    )
    cur.execute(INSERT_ENTRY, (account_id, "hold", -amount, 0, hold_id, "hold:" + hold_id, created))
    return (HELD, int(rows[0][0])), True


def settle(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    amount: int,
    charge: int,
    at: datetime,
    usage: UsageRow | None,
    swept: bool = False,
) -> tuple[Settled | None, bool]:
    """The SQL of td_settle (migration 0007), statement for statement."""
    ts = at.strftime(SQLITE_DATETIME)
    captured = min(charge, amount)
    cur.execute(CLOSE_HOLD, (SWEPT if swept else SETTLED, captured, hold_id))
    if cur.rowcount == 1:
        late = False
        refund = amount - captured
        want = charge - captured  # above the hold
        rows = cur.execute(REFUND, (refund, account_id)).fetchall()
        if not rows:
            raise LookupError(f"hold {hold_id}: account {account_id} does not exist")
        balance = int(rows[0][0])
        cur.execute(
            INSERT_ENTRY, (account_id, "capture", 0, captured, hold_id, "capture:" + hold_id, ts)
        )
        if refund:
            cur.execute(
                INSERT_ENTRY, (account_id, "release", refund, 0, hold_id, "release:" + hold_id, ts)
            )
        if key_id is not None:
            if usage is not None:
                cur.execute(UNRESERVE_USED, (refund, ts, key_id))
            else:
                cur.execute(UNRESERVE, (refund, key_id))
    else:
        # Not open: settled already (nothing to do), or released by a sweeper while this
        # request still ran: then what it produced is charged now, as a plain debit, once.
        if swept:
            return None, True
        cur.execute(MARK_LATE, (hold_id,))
        if cur.rowcount != 1:
            return None, True
        late, captured, want = True, 0, charge
        row = cur.execute(BALANCE, (account_id,)).fetchone()
        balance = int(row[0]) if row else 0
    extra = 0
    if want > 0:
        extra = min(want, balance)
        if key_id is not None:
            room = cur.execute(KEY_ROOM, (key_id,)).fetchone()
            if room is not None and room[0] is not None:
                extra = min(extra, max(int(room[0]), 0))
        if extra:
            balance = int(cur.execute(DEBIT_ANY, (extra, account_id)).fetchall()[0][0])
            if key_id is not None:
                cur.execute(RESERVE_ANY, (extra, ts, key_id))
        kind = "late" if late else "overage"
        note = f"{kind}: {want} wanted, {extra} charged, {want - extra} uncollected"
        cur.execute(
            INSERT_NOTE,
            (account_id, kind, -extra, extra, hold_id, f"{kind}:{hold_id}", note, ts),
        )
    charged = captured + extra
    if usage is not None:
        cur.execute(
            INSERT_USAGE,
            (
                usage.request_id,
                account_id,
                key_id,
                usage.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                charged,
                usage.status,
                usage.finish_reason,
                usage.latency_ms,
                usage.ttft_ms,
                usage.user,
                ts,
                usage.deployment,
                usage.estimated,
            ),
        )
    return (charged, balance, late), True


def renew(
    cur: sqlite3.Cursor, owner: str, hold_ids: list[str], expires_at: datetime
) -> tuple[int, bool]:
    cur.execute(RENEW, (expires_at.strftime(SQLITE_DATETIME), owner, json.dumps(hold_ids)))
    return cur.rowcount, True

"""The ledger's transactions as plain `sqlite3` jobs, run by billing/fastpath_sqlite.py's writer.

Each job takes a cursor inside an open transaction and returns its result; it leaves nothing
written when it refuses (a hold over the key's limit undoes its own debit, as td_hold does), so
the writer needs no SAVEPOINT per job. A job that raises is undone by the writer (the batch is
rolled back and run again, each job in its own SAVEPOINT). The statements are the ledger's
(billing/ledger.py states the rules), from storage/ledger_sql.py, the same as PostgreSQL's
td_hold and td_settle, statement for statement: the conditional debit, the guarded `UPDATE holds
… WHERE status = 'open'`, append-only entries with unique idempotency keys. Datetimes are
written as SQLAlchemy writes them (`SQLITE_DATETIME`, UTC), so the rest of the code reads and
compares them as before.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from tokendock.billing.records import (
    HELD,
    NO_CREDIT,
    OVER_LIMIT,
    SETTLED,
    SWEPT,
    LineResult,
    Settled,
    UsageRow,
)
from tokendock.storage import batch_sql
from tokendock.storage import ledger_sql as sql


def stamp(at: datetime) -> str:
    """`at` as SQLAlchemy's SQLite DateTime stores it (db.SQLITE_DATETIME: the fields as given,
    microseconds always, no zone); isoformat is twice as fast as strftime."""
    return at.isoformat(" ", "microseconds")[:26]


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
) -> tuple[int, int]:
    """(outcome, balance); a refusal leaves nothing written."""
    row = cur.execute(sql.DEBIT, (amount, account_id, amount)).fetchone()
    if row is None:
        row = cur.execute(sql.BALANCE, (account_id,)).fetchone()
        return NO_CREDIT, int(row[0]) if row else 0
    balance = int(row[0])
    if key_id is not None:
        cur.execute(sql.RESERVE, (amount, key_id, amount))
        if cur.rowcount != 1:
            cur.execute(sql.UNDEBIT, (amount, account_id))  # net zero, unseen: one transaction
            return OVER_LIMIT, 0
    created = stamp(at)
    cur.execute(
        sql.INSERT_HOLD,
        (hold_id, account_id, key_id, amount, request_id, owner, created, stamp(expires_at)),
    )
    cur.execute(
        sql.INSERT_ENTRY, (account_id, "hold", -amount, 0, hold_id, "hold:" + hold_id, created)
    )
    return HELD, balance


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
) -> Settled | None:
    """The SQL of td_settle (storage/ledger_plpgsql.py), statement for statement."""
    ts = stamp(at)
    captured = min(charge, amount)
    cur.execute(sql.CLOSE_HOLD, (SWEPT if swept else SETTLED, captured, hold_id))
    if cur.rowcount == 1:
        late = False
        refund = amount - captured
        want = charge - captured  # above the hold
        row = cur.execute(sql.REFUND, (refund, account_id)).fetchone()
        if row is None:
            raise LookupError(f"hold {hold_id}: account {account_id} does not exist")
        balance = int(row[0])
        if refund:
            cur.execute(sql.INSERT_CAPTURE_RELEASE, (account_id, captured, hold_id, ts, refund))
        else:
            cur.execute(
                sql.INSERT_ENTRY,
                (account_id, "capture", 0, captured, hold_id, "capture:" + hold_id, ts),
            )
        if key_id is not None:
            if usage is not None:
                cur.execute(sql.UNRESERVE_USED, (refund, ts, key_id))
            else:
                cur.execute(sql.UNRESERVE, (refund, key_id))
    else:
        # Not open: settled already (nothing to do), or released by a sweeper while this
        # request still ran: then what it produced is charged now, as a plain debit, once.
        if swept:
            return None
        cur.execute(sql.MARK_LATE, (hold_id,))
        if cur.rowcount != 1:
            return None
        late, captured, want = True, 0, charge
        row = cur.execute(sql.BALANCE, (account_id,)).fetchone()
        balance = int(row[0]) if row else 0
    extra, balance = _charge_above(cur, hold_id, account_id, key_id, want, balance, late, ts)
    charged = captured + extra
    if usage is not None:
        _insert_usage(cur, usage, account_id, key_id, charged, ts)
    return charged, balance, late


def settle_line(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    amount: int,
    charge: int,
    at: datetime,
    usage: UsageRow | None,
    fence: LineResult,
) -> Settled | None:
    """A batch line's settlement and its result in one transaction, only while the line's
    claim holds (storage/batch_sql.py): else nothing is written and `fence.won` is False."""
    line = (fence.batch_id, fence.line)
    cur.execute(batch_sql.FENCE, (fence.outcome, fence.result, *line, fence.lease))
    if cur.rowcount != 1:
        fence.won = False
        return None
    fence.won = True
    settled = settle(cur, hold_id, account_id, key_id, amount, charge, at, usage)
    charged = 0 if settled is None else settled[0]
    fence.charged = charged
    if charged:
        cur.execute(batch_sql.COST, (charged, *line))
    ok = fence.outcome == "succeeded"
    cur.execute(batch_sql.COUNT, (int(ok), int(not ok), charged, fence.batch_id))
    return settled


def _charge_above(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    want: int,
    balance: int,
    late: bool,
    ts: str,
) -> tuple[int, int]:
    """Debits what a settlement wants beyond its hold, up to the balance and the key's spend
    limit, with a note of what went uncollected; (extra charged, balance after)."""
    if want <= 0:
        return 0, balance
    extra = min(want, balance)
    if key_id is not None:
        room = cur.execute(sql.KEY_ROOM, (key_id,)).fetchone()
        if room is not None and room[0] is not None:
            extra = min(extra, max(int(room[0]), 0))
    if extra:
        balance = int(cur.execute(sql.DEBIT_ANY, (extra, account_id)).fetchone()[0])
        if key_id is not None:
            cur.execute(sql.RESERVE_ANY, (extra, ts, key_id))
    kind = "late" if late else "overage"
    note = f"{kind}: {want} wanted, {extra} charged, {want - extra} uncollected"
    cur.execute(
        sql.INSERT_NOTE,
        (account_id, kind, -extra, extra, hold_id, f"{kind}:{hold_id}", note, ts),
    )
    return extra, balance


def _insert_usage(
    cur: sqlite3.Cursor, u: UsageRow, account_id: int, key_id: int | None, charged: int, ts: str
) -> None:
    cur.execute(
        sql.INSERT_USAGE,
        (
            u.request_id,
            account_id,
            key_id,
            u.model,
            u.prompt_tokens,
            u.completion_tokens,
            charged,
            u.status,
            u.finish_reason,
            u.latency_ms,
            u.ttft_ms,
            u.user,
            ts,
            u.deployment,
            u.estimated,
            u.endpoint,
            u.cached_tokens,
        ),
    )


def renew(cur: sqlite3.Cursor, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
    cur.execute(sql.RENEW, (stamp(expires_at), owner, json.dumps(hold_ids)))
    return cur.rowcount

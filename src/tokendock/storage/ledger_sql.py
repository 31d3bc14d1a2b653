"""The ledger's statements, each written once: the SQLite statements the writer thread runs
(billing/sqlite_jobs.py) and the calls of the PostgreSQL functions that run the same statements
server-side (billing/fastpath_pg.py; the function texts, every version frozen in full, are in
storage/ledger_plpgsql.py, installed by the migrations that name them).

billing/ledger.py states the rules these keep: the conditional debit (never below zero), the
guarded `UPDATE holds … WHERE status = 'open'` (each hold leaves `open` once), append-only entries
whose idempotency keys are unique. Hold (td_hold) and settle (td_settle) run, statement for
statement, as:

    hold    DEBIT (refused: BALANCE) · RESERVE (refused: UNDEBIT) · INSERT_HOLD · INSERT_ENTRY
    settle  CLOSE_HOLD · REFUND · INSERT_CAPTURE_RELEASE (or INSERT_ENTRY: nothing refunded)
            · UNRESERVE_USED / UNRESERVE · [above the hold: KEY_ROOM · DEBIT_ANY · RESERVE_ANY
            · INSERT_NOTE] · INSERT_USAGE
            a hold a sweeper released: MARK_LATE · BALANCE · the same debit above, `late`
    renew   RENEW (not per request: every third of the hold TTL)
"""

from __future__ import annotations

from tokendock.storage import ledger_plpgsql

# -- SQLite (qmark parameters; `?` order as the tuples billing/sqlite_jobs.py builds) ---------

DEBIT = (
    "UPDATE accounts SET balance = balance - ? "
    "WHERE id = ? AND balance >= ? AND disabled = 0 RETURNING balance"
)
UNDEBIT = "UPDATE accounts SET balance = balance + ? WHERE id = ?"
BALANCE = "SELECT balance FROM accounts WHERE id = ?"
RESERVE = (
    "UPDATE api_keys SET spent = spent + ? "
    "WHERE id = ? AND (spend_limit IS NULL OR spent + ? <= spend_limit)"
)
INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, key_id, amount, status, request_id, owner, "
    "created_at, expires_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?)"
)
_ENTRY = (
    "INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key, "
    "created_at) VALUES "
)
INSERT_ENTRY = _ENTRY + "(?, ?, ?, ?, ?, ?, ?)"
# A hold's capture and the release of the rest, one statement (the entries keep this order).
# Parameters: (account_id, captured, hold_id, created_at, refund).
INSERT_CAPTURE_RELEASE = (
    _ENTRY + "(?1, 'capture', 0, ?2, ?3, 'capture:' || ?3, ?4), "
    "(?1, 'release', ?5, 0, ?3, 'release:' || ?3, ?4)"
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
    "deployment, estimated, endpoint, cached_tokens) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# -- PostgreSQL (asyncpg `$n` parameters) ----------------------------------------------------

TD_HOLD = ledger_plpgsql.TD_HOLD  # the versions the database runs after the last migration
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V11

PG_HOLD = "SELECT o_status, o_balance FROM td_hold($1, $2, $3, $4, $5, $6, $7, $8)"
PG_SETTLE = (
    "SELECT o_charged, o_balance, o_late FROM td_settle($1, $2, $3, $4, $5, $6, $7, $8, $9, "
    "$10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
)
PG_RENEW = (
    "UPDATE holds SET expires_at = $1 WHERE owner = $2 AND status = 'open' AND id = ANY($3::text[])"
)

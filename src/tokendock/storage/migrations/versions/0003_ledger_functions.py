"""ledger hot-path functions (PostgreSQL only)

`td_hold` and `td_settle` run the ledger's two per-request transactions server-side, so each
costs one round trip (billing/fastpath_pg.py calls them; billing/ledger.py states the
invariants they keep). A later migration that changes these tables must replace them too.
On SQLite this migration does nothing (the ledger runs its SQL in a writer thread instead).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Refusals are return values, not exceptions (cheaper, and no subtransaction): the status is
# 0 held (balance = after the debit), 1 insufficient credit (balance = the current one),
# 2 over the key's spend limit (the debit is undone in the same transaction: net zero, and
# nobody else saw it since the row stays locked until COMMIT).
TD_HOLD = """
CREATE OR REPLACE FUNCTION td_hold(
    p_hold_id text, p_account_id integer, p_key_id integer, p_amount bigint,
    p_request_id text, p_owner text, p_at timestamptz, p_expires_at timestamptz,
    OUT o_status smallint, OUT o_balance bigint)
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE accounts SET balance = balance - p_amount
     WHERE id = p_account_id AND balance >= p_amount AND disabled IS false
    RETURNING balance INTO o_balance;
    IF NOT FOUND THEN
        o_status := 1;
        SELECT balance INTO o_balance FROM accounts WHERE id = p_account_id;
        o_balance := coalesce(o_balance, 0);
        RETURN;
    END IF;
    IF p_key_id IS NOT NULL THEN
        UPDATE api_keys SET spent = spent + p_amount
         WHERE id = p_key_id AND (spend_limit IS NULL OR spent + p_amount <= spend_limit);
        IF NOT FOUND THEN
            UPDATE accounts SET balance = balance + p_amount WHERE id = p_account_id;
            o_status := 2;
            o_balance := 0;
            RETURN;
        END IF;
    END IF;
    INSERT INTO holds (id, account_id, key_id, amount, status, request_id, owner,
                       created_at, expires_at)
    VALUES (p_hold_id, p_account_id, p_key_id, p_amount, 'open', p_request_id, p_owner,
            p_at, p_expires_at);
    INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key,
                                created_at)
    VALUES (p_account_id, 'hold', -p_amount, 0, p_hold_id, 'hold:' || p_hold_id, p_at);
    o_status := 0;
END
$$
"""

# NULL when the hold was not open (already settled or released): nothing changed.
TD_SETTLE = """
CREATE OR REPLACE FUNCTION td_settle(
    p_hold_id text, p_account_id integer, p_key_id integer, p_charge bigint, p_refund bigint,
    p_at timestamptz, p_has_usage boolean, p_request_id text, p_model text,
    p_prompt_tokens integer, p_completion_tokens integer, p_status text,
    p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_balance bigint;
BEGIN
    UPDATE holds SET status = 'settled', captured = p_charge
     WHERE id = p_hold_id AND status = 'open';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE accounts SET balance = balance + p_refund WHERE id = p_account_id
    RETURNING balance INTO STRICT v_balance;
    INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key,
                                created_at)
    VALUES (p_account_id, 'capture', 0, p_charge, p_hold_id,
            'capture:' || p_hold_id, p_at);
    IF p_refund <> 0 THEN
        INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                    idempotency_key, created_at)
        VALUES (p_account_id, 'release', p_refund, 0, p_hold_id,
                'release:' || p_hold_id, p_at);
    END IF;
    IF p_key_id IS NOT NULL THEN
        IF p_has_usage THEN
            UPDATE api_keys SET spent = spent - p_refund, last_used_at = p_at
             WHERE id = p_key_id;
        ELSE
            UPDATE api_keys SET spent = spent - p_refund WHERE id = p_key_id;
        END IF;
    END IF;
    IF p_has_usage THEN
        INSERT INTO usage_records (request_id, account_id, key_id, model, prompt_tokens,
                                   completion_tokens, cost, status, finish_reason,
                                   latency_ms, ttft_ms, "user", created_at)
        VALUES (p_request_id, p_account_id, p_key_id, p_model, p_prompt_tokens,
                p_completion_tokens, p_charge, p_status, p_finish_reason, p_latency_ms,
                p_ttft_ms, p_user, p_at);
    END IF;
    RETURN v_balance;
END
$$
"""

SIGNATURES = (
    "td_hold(text, integer, integer, bigint, text, text, timestamptz, timestamptz)",
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, text, text, "
    "integer, integer, text, text, integer, integer, text)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # exec_driver_sql: the bodies go to the server verbatim (no bind-parameter parsing).
    op.get_bind().exec_driver_sql(TD_HOLD)
    op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in SIGNATURES:
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {signature}")

"""td_settle charges above the hold, marks swept holds, and charges late settlements

`td_settle` (0003, replaced in 0004) is replaced by the full text below (PostgreSQL only; on
SQLite billing/fastpath_sqlite.py runs the same statements). It now takes the hold's amount and
the whole charge, and returns (charged, balance, late):

- charge <= hold: capture it, refund the rest (as before);
- charge > hold: capture the hold and debit the excess up to the available balance and the
  key's spend-limit room, never below zero: an `overage` entry (amount -x, charged x, the
  shortfall in its reference), and the usage row's cost is the total charged;
- `p_swept`: a sweeper releases the hold (status 'swept' instead of 'settled');
- the hold is 'swept' and its request settles now (its owner was alive after all): what was
  produced is charged as a plain debit on the same terms, once (status 'late', a `late`
  entry), with its usage row; `ledger verify` reports such holds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_v4 = importlib.import_module("tokendock.storage.migrations.versions.0004_usage_deployment")

OLD_SIGNATURE = _v4.NEW_SIGNATURE
NEW_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, boolean, text, "
    "text, integer, integer, text, text, integer, integer, text, text, boolean)"
)

# Lock order as td_hold's and the old td_settle's: holds row, then accounts, then api_keys.
TD_SETTLE = """
CREATE OR REPLACE FUNCTION td_settle(
    p_hold_id text, p_account_id integer, p_key_id integer, p_amount bigint, p_charge bigint,
    p_at timestamptz, p_swept boolean, p_has_usage boolean, p_request_id text, p_model text,
    p_prompt_tokens integer, p_completion_tokens integer, p_status text,
    p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text,
    p_deployment text, p_estimated boolean,
    OUT o_charged bigint, OUT o_balance bigint, OUT o_late boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_captured bigint := least(greatest(p_charge, 0), p_amount);
    v_refund bigint := p_amount - least(greatest(p_charge, 0), p_amount);
    v_want bigint := greatest(p_charge, 0) - least(greatest(p_charge, 0), p_amount);
    v_extra bigint := 0;
    v_room bigint;
    v_kind text;
BEGIN
    UPDATE holds SET status = CASE WHEN p_swept THEN 'swept' ELSE 'settled' END,
                     captured = v_captured
     WHERE id = p_hold_id AND status = 'open';
    IF FOUND THEN
        o_late := false;
        UPDATE accounts SET balance = balance + v_refund WHERE id = p_account_id
        RETURNING balance INTO STRICT o_balance;
        INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                    idempotency_key, created_at)
        VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                'capture:' || p_hold_id, p_at);
        IF v_refund <> 0 THEN
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'release', v_refund, 0, p_hold_id,
                    'release:' || p_hold_id, p_at);
        END IF;
        IF p_key_id IS NOT NULL THEN
            IF p_has_usage THEN
                UPDATE api_keys SET spent = spent - v_refund, last_used_at = p_at
                 WHERE id = p_key_id;
            ELSE
                UPDATE api_keys SET spent = spent - v_refund WHERE id = p_key_id;
            END IF;
        END IF;
    ELSE
        -- Not open: settled already (nothing to do), or released by a sweeper while this
        -- request still ran: then what it produced is charged now, as a plain debit, once.
        IF p_swept THEN
            RETURN;
        END IF;
        UPDATE holds SET status = 'late' WHERE id = p_hold_id AND status = 'swept';
        IF NOT FOUND THEN
            RETURN;
        END IF;
        o_late := true;
        v_captured := 0;
        v_want := greatest(p_charge, 0);
        SELECT balance INTO o_balance FROM accounts WHERE id = p_account_id FOR UPDATE;
        o_balance := coalesce(o_balance, 0);
    END IF;
    IF v_want > 0 THEN
        v_extra := least(v_want, o_balance);
        IF p_key_id IS NOT NULL THEN
            SELECT spend_limit - spent INTO v_room FROM api_keys WHERE id = p_key_id FOR UPDATE;
            IF v_room IS NOT NULL THEN
                v_extra := least(v_extra, greatest(v_room, 0));
            END IF;
        END IF;
        IF v_extra > 0 THEN
            UPDATE accounts SET balance = balance - v_extra WHERE id = p_account_id
            RETURNING balance INTO STRICT o_balance;
            IF p_key_id IS NOT NULL THEN
                UPDATE api_keys SET spent = spent + v_extra, last_used_at = p_at
                 WHERE id = p_key_id;
            END IF;
        END IF;
        v_kind := CASE WHEN o_late THEN 'late' ELSE 'overage' END;
        INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                    idempotency_key, reference, created_at)
        VALUES (p_account_id, v_kind, -v_extra, v_extra, p_hold_id, v_kind || ':' || p_hold_id,
                format('%s: %s wanted, %s charged, %s uncollected',
                       v_kind, v_want, v_extra, v_want - v_extra),
                p_at);
    END IF;
    o_charged := v_captured + v_extra;
    IF p_has_usage THEN
        INSERT INTO usage_records (request_id, account_id, key_id, model, prompt_tokens,
                                   completion_tokens, cost, status, finish_reason,
                                   latency_ms, ttft_ms, "user", created_at, deployment,
                                   estimated)
        VALUES (p_request_id, p_account_id, p_key_id, p_model, p_prompt_tokens,
                p_completion_tokens, o_charged, p_status, p_finish_reason, p_latency_ms,
                p_ttft_ms, p_user, p_at, p_deployment, p_estimated);
    END IF;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
    op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
    op.get_bind().exec_driver_sql(_v4.TD_SETTLE)

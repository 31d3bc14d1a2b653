"""Every version of the ledger's PostgreSQL functions, each written out in full, frozen.

A migration creates a function from the constant of its own version and never edits one: a
migration that already ran must still create exactly what it created. A change is a new
constant (the whole new text) and a new migration that installs it; `ledger_sql` names the
current version, which billing/fastpath_pg.py calls. The SQLite side runs the same statements
from storage/ledger_sql.py (billing/sqlite_jobs.py).

    td_hold      TD_HOLD (0003, current)
    td_settle    TD_SETTLE_V3 (0003) → TD_SETTLE_V4 (0004: usage deployment/estimated)
                 → TD_SETTLE_V7 (0007: overage, swept and late holds)
                 → TD_SETTLE_V8 (0008: the capture and its release in one INSERT)
                 → TD_SETTLE_V10 (0010: usage endpoint)
                 → TD_SETTLE_V11 (0011: usage cached_tokens; current)
"""

from __future__ import annotations

# 0003. Refusals are return values, not exceptions (cheaper, and no subtransaction): the
# status is 0 held (balance = after the debit), 1 insufficient credit (balance = the current
# one), 2 over the key's spend limit (the debit is undone in the same transaction: net zero,
# and nobody else saw it since the row stays locked until COMMIT).
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
TD_HOLD_SIGNATURE = "td_hold(text, integer, integer, bigint, text, text, timestamptz, timestamptz)"

# 0003. NULL when the hold was not open (already settled or released): nothing changed.
TD_SETTLE_V3 = """
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
TD_SETTLE_V3_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, text, text, i"
    "nteger, integer, text, text, integer, integer, text)"
)

# 0004: V3 taking the usage row's deployment and estimated flag.
TD_SETTLE_V4 = """
CREATE OR REPLACE FUNCTION td_settle(
    p_hold_id text, p_account_id integer, p_key_id integer, p_charge bigint, p_refund bigint,
    p_at timestamptz, p_has_usage boolean, p_request_id text, p_model text,
    p_prompt_tokens integer, p_completion_tokens integer, p_status text,
    p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text,
    p_deployment text, p_estimated boolean)
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
                                   latency_ms, ttft_ms, "user", created_at, deployment, estimated)
        VALUES (p_request_id, p_account_id, p_key_id, p_model, p_prompt_tokens,
                p_completion_tokens, p_charge, p_status, p_finish_reason, p_latency_ms,
                p_ttft_ms, p_user, p_at, p_deployment, p_estimated);
    END IF;
    RETURN v_balance;
END
$$
"""
TD_SETTLE_V4_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, text, text, i"
    "nteger, integer, text, text, integer, integer, text, text, boolean)"
)

# 0007: the hold's amount and the whole charge in; (charged, balance, late) out. Lock order as
# td_hold's and the old td_settle's: holds row, then accounts, then api_keys.
TD_SETTLE_V7 = """
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
TD_SETTLE_V7_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, boolean, text"
    ", text, integer, integer, text, text, integer, integer, text, text, boolean)"
)

# 0008: V7 with the capture and its release written by one INSERT (same signature).
TD_SETTLE_V8 = """
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
        -- The capture and its release as one statement (one row when nothing is refunded).
        IF v_refund <> 0 THEN
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at),
                   (p_account_id, 'release', v_refund, 0, p_hold_id,
                    'release:' || p_hold_id, p_at);
        ELSE
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at);
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
TD_SETTLE_V8_SIGNATURE = TD_SETTLE_V7_SIGNATURE


# 0010: V8 taking the usage row's endpoint (the API the request came in by): a new signature.
TD_SETTLE_V10 = """
CREATE OR REPLACE FUNCTION td_settle(
    p_hold_id text, p_account_id integer, p_key_id integer, p_amount bigint, p_charge bigint,
    p_at timestamptz, p_swept boolean, p_has_usage boolean, p_request_id text, p_model text,
    p_prompt_tokens integer, p_completion_tokens integer, p_status text,
    p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text,
    p_deployment text, p_estimated boolean, p_endpoint text,
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
        -- The capture and its release as one statement (one row when nothing is refunded).
        IF v_refund <> 0 THEN
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at),
                   (p_account_id, 'release', v_refund, 0, p_hold_id,
                    'release:' || p_hold_id, p_at);
        ELSE
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at);
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
                                   estimated, endpoint)
        VALUES (p_request_id, p_account_id, p_key_id, p_model, p_prompt_tokens,
                p_completion_tokens, o_charged, p_status, p_finish_reason, p_latency_ms,
                p_ttft_ms, p_user, p_at, p_deployment, p_estimated, p_endpoint);
    END IF;
END
$$
"""
TD_SETTLE_V10_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, boolean, text"
    ", text, integer, integer, text, text, integer, integer, text, text, boolean, text)"
)


# 0011: V10 taking the usage row's cached_tokens (prompt tokens read from a KV cache): a new
# signature.
TD_SETTLE_V11 = """
CREATE OR REPLACE FUNCTION td_settle(
    p_hold_id text, p_account_id integer, p_key_id integer, p_amount bigint, p_charge bigint,
    p_at timestamptz, p_swept boolean, p_has_usage boolean, p_request_id text, p_model text,
    p_prompt_tokens integer, p_completion_tokens integer, p_status text,
    p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text,
    p_deployment text, p_estimated boolean, p_endpoint text, p_cached_tokens integer,
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
        -- The capture and its release as one statement (one row when nothing is refunded).
        IF v_refund <> 0 THEN
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at),
                   (p_account_id, 'release', v_refund, 0, p_hold_id,
                    'release:' || p_hold_id, p_at);
        ELSE
            INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id,
                                        idempotency_key, created_at)
            VALUES (p_account_id, 'capture', 0, v_captured, p_hold_id,
                    'capture:' || p_hold_id, p_at);
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
                                   estimated, endpoint, cached_tokens)
        VALUES (p_request_id, p_account_id, p_key_id, p_model, p_prompt_tokens,
                p_completion_tokens, o_charged, p_status, p_finish_reason, p_latency_ms,
                p_ttft_ms, p_user, p_at, p_deployment, p_estimated, p_endpoint,
                p_cached_tokens);
    END IF;
END
$$
"""
TD_SETTLE_V11_SIGNATURE = (
    "td_settle(text, integer, integer, bigint, bigint, timestamptz, boolean, boolean, text"
    ", text, integer, integer, text, text, integer, integer, text, text, boolean, text, integer)"
)

"""td_settle charges above the hold, marks swept holds, and charges late settlements

`td_settle` (0003, replaced in 0004) is replaced by its full new text, TD_SETTLE_V7 in
storage/ledger_plpgsql.py (PostgreSQL only; on SQLite billing/sqlite_jobs.py runs the same
statements). It now takes the hold's amount and
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

from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_SIGNATURE = ledger_plpgsql.TD_SETTLE_V4_SIGNATURE
NEW_SIGNATURE = ledger_plpgsql.TD_SETTLE_V7_SIGNATURE
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V7  # the full text (storage/ledger_plpgsql.py)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
    op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
    op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V4)

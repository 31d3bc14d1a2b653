"""td_settle writes a hold's capture and its release with one INSERT

`td_settle` (0007) is replaced by its full new text, TD_SETTLE_V8 in storage/ledger_plpgsql.py:
the same statements, guards and results, but the `capture` entry and the `release` entry of the
refunded rest are one two-row INSERT (one row when nothing is refunded), as on SQLite
(billing/sqlite_jobs.py). Same signature (PostgreSQL only; nothing to do on SQLite).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 08:30:00.000000
"""

from __future__ import annotations

from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V8)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V7)

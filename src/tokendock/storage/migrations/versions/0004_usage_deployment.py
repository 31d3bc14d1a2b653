"""usage records name their upstream deployment and say when tokens were estimated

`td_settle` (migration 0003) writes usage rows, so it is replaced with a version that takes the
two new fields (PostgreSQL only): TD_SETTLE_V4 in storage/ledger_plpgsql.py, written out in full.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_SIGNATURE = ledger_plpgsql.TD_SETTLE_V3_SIGNATURE
NEW_SIGNATURE = ledger_plpgsql.TD_SETTLE_V4_SIGNATURE
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V4  # written out in full there


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deployment", sa.String(length=200), nullable=True))
        batch_op.add_column(
            sa.Column("estimated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V3)
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("estimated")
        batch_op.drop_column("deployment")

"""usage records count cached prompt tokens; operators may price them

- `usage_records.cached_tokens` (NOT NULL, default 0): of a request's prompt tokens, those read
  from a KV cache (prefix caching), billed at the model's cached input price. `td_settle`
  writes usage rows, so it is replaced by TD_SETTLE_V11 in storage/ledger_plpgsql.py (V10
  taking `p_cached_tokens`; a new signature, PostgreSQL only).
- `model_settings.cached_input_price` (nullable): the admin page's override of the catalog's
  `cached_input` price; None is the input price.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_SIGNATURE = ledger_plpgsql.TD_SETTLE_V10_SIGNATURE
NEW_SIGNATURE = ledger_plpgsql.TD_SETTLE_V11_SIGNATURE
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V11  # the full text (storage/ledger_plpgsql.py)


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cached_tokens", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("model_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_input_price", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V10)
    with op.batch_alter_table("model_settings", schema=None) as batch_op:
        batch_op.drop_column("cached_input_price")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("cached_tokens")

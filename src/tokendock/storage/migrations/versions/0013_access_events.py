"""access events: one row per change of who may run work, followed by every replica

- `access_events` (id, account_id, key_id NULL = the whole account, reason, at): written in the
  transaction that disables / enables an account or revokes a key; every replica reads the rows
  past the last id it saw (a primary-key range, every ~0.5 s) and ends the running requests of
  that account or key (services/access.py). No foreign key: it outlives a deleted account.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_events")),
    )


def downgrade() -> None:
    op.drop_table("access_events")

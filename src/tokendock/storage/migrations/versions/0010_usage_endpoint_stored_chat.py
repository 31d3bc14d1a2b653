"""usage records name their endpoint; stored chat completions

- `usage_records.endpoint` (nullable): the API a request came in by (chat.completions,
  completions, embeddings, responses, messages …). `td_settle` writes usage rows, so it is
  replaced by TD_SETTLE_V10 in storage/ledger_plpgsql.py (V8 taking `p_endpoint`; a new
  signature, PostgreSQL only).
- `stored_chat_completions`: chat completions created with `store: true`, per account, and
  `stored_chat_metadata`: their metadata, one pair a row (the list's metadata filters).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

OLD_SIGNATURE = ledger_plpgsql.TD_SETTLE_V8_SIGNATURE
NEW_SIGNATURE = ledger_plpgsql.TD_SETTLE_V10_SIGNATURE
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V10  # the full text (storage/ledger_plpgsql.py)


def upgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint", sa.String(length=32), nullable=True))
    op.create_table(
        "stored_chat_completions",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("meta", sa.Text(), nullable=True),
        sa.Column("messages", sa.Text(), nullable=False),
        sa.Column("completion", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_stored_chat_completions_account_id_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name=op.f("fk_stored_chat_completions_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_stored_chat_completions")),
        sa.UniqueConstraint("id", name=op.f("uq_stored_chat_completions_id")),
    )
    op.create_index(
        "ix_stored_chat_completions_account_seq",
        "stored_chat_completions",
        ["account_id", "seq"],
    )
    op.create_table(
        "stored_chat_metadata",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.ForeignKeyConstraint(
            ["seq"],
            ["stored_chat_completions.seq"],
            name=op.f("fk_stored_chat_metadata_seq_stored_chat_completions"),
        ),
        sa.PrimaryKeyConstraint("seq", "key", name=op.f("pk_stored_chat_metadata")),
    )
    op.create_index("ix_stored_chat_metadata_key_value", "stored_chat_metadata", ["key", "value"])
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {OLD_SIGNATURE}")
        op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {NEW_SIGNATURE}")
        op.get_bind().exec_driver_sql(ledger_plpgsql.TD_SETTLE_V8)
    op.drop_index("ix_stored_chat_metadata_key_value", table_name="stored_chat_metadata")
    op.drop_table("stored_chat_metadata")
    op.drop_index("ix_stored_chat_completions_account_seq", table_name="stored_chat_completions")
    op.drop_table("stored_chat_completions")
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("endpoint")

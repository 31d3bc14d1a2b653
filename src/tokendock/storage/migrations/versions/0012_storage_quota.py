"""a per-account storage quota: what each stored object weighs, and each account's total

- `responses.size` and `stored_chat_completions.size` (NOT NULL, default 0): the bytes of the
  row's stored JSON text; a delete frees exactly this much.
- `account_storage`: one row per account that stores anything, `used` = Σ size of its stored
  objects, kept in the same transaction as every insert, update and delete of them
  (storage/quota.py). CHECK used >= 0.
- Existing rows are measured (bytes of their text columns) and each account's total backfilled.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-16 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

RESPONSE_TEXTS = ("request", "input_items", "context", "output", "usage", "metadata", "error")
CHAT_TEXTS = ("meta", "messages", "completion")


def _bytes_of(columns: tuple[str, ...]) -> str:
    """SQL summing the UTF-8 bytes of text columns (NULL counts 0), in this database's dialect."""
    if op.get_bind().dialect.name == "postgresql":
        one = "COALESCE(octet_length({}), 0)"
    else:  # SQLite: length() of a BLOB counts bytes, of TEXT characters
        one = "COALESCE(length(CAST({} AS BLOB)), 0)"
    return " + ".join(one.format(f'"{c}"') for c in columns)


def upgrade() -> None:
    for table in ("responses", "stored_chat_completions"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("size", sa.BigInteger(), nullable=False, server_default="0")
            )
    op.create_table(
        "account_storage",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False, server_default="0"),
        sa.CheckConstraint("used >= 0", name=op.f("ck_account_storage_used_non_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_account_storage_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_storage")),
    )
    bind = op.get_bind()
    bind.exec_driver_sql(f"UPDATE responses SET size = {_bytes_of(RESPONSE_TEXTS)}")
    bind.exec_driver_sql(f"UPDATE stored_chat_completions SET size = {_bytes_of(CHAT_TEXTS)}")
    bind.exec_driver_sql(
        "INSERT INTO account_storage (account_id, used) "
        "SELECT account_id, SUM(size) FROM ("
        " SELECT account_id, size FROM responses"
        " UNION ALL SELECT account_id, size FROM stored_chat_completions"
        ") AS stored GROUP BY account_id"
    )


def downgrade() -> None:
    op.drop_table("account_storage")
    for table in ("stored_chat_completions", "responses"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("size")

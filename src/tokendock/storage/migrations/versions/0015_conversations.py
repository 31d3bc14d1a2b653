"""conversations (issue 22): the Conversations API's conversations and their items

- `conversations`: per account, with its `metadata` (JSON text) and `size` (bytes, counted in
  `account_storage` like every stored object).
- `conversation_items`: a conversation's items in order (`seq`), each one JSON text with its
  `size`; ids are not unique (a client may append an item it was given back).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_conversations_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_index("ix_conversations_account", "conversations", ["account_id"])
    op.create_table(
        "conversation_items",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("item", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_items_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_conversation_items")),
    )
    op.create_index(
        "ix_conversation_items_conversation_seq", "conversation_items", ["conversation_id", "seq"]
    )
    op.create_index(
        "ix_conversation_items_conversation_id", "conversation_items", ["conversation_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("conversation_items")
    op.drop_table("conversations")

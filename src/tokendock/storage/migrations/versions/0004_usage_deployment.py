"""usage records name their upstream deployment and say when tokens were estimated

`td_settle` (migration 0003) writes usage rows, so it is replaced with a version that takes the
two new fields (PostgreSQL only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 01:10:00.000000
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_v3 = importlib.import_module("tokendock.storage.migrations.versions.0003_ledger_functions")

OLD_SIGNATURE = _v3.SIGNATURES[1]
NEW_SIGNATURE = OLD_SIGNATURE[:-1] + ", text, boolean)"

TD_SETTLE = (
    _v3.TD_SETTLE.replace(
        "p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text)",
        "p_finish_reason text, p_latency_ms integer, p_ttft_ms integer, p_user text,\n"
        "    p_deployment text, p_estimated boolean)",
    )
    .replace(
        'latency_ms, ttft_ms, "user", created_at)',
        'latency_ms, ttft_ms, "user", created_at, deployment, estimated)',
    )
    .replace(
        "p_ttft_ms, p_user, p_at);",
        "p_ttft_ms, p_user, p_at, p_deployment, p_estimated);",
    )
)


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
        op.get_bind().exec_driver_sql(_v3.TD_SETTLE)
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_column("estimated")
        batch_op.drop_column("deployment")

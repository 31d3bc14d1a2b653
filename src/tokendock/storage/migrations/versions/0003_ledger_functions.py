"""ledger hot-path functions (PostgreSQL only)

`td_hold` and `td_settle` run the ledger's two per-request transactions server-side, so each
costs one round trip (billing/fastpath_pg.py calls them; billing/ledger.py states the
invariants they keep). A later migration that changes these tables must replace them too.
On SQLite this migration does nothing (the ledger runs its SQL in a writer thread instead).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 23:40:00.000000
"""

from __future__ import annotations

from alembic import op

from tokendock.storage import ledger_plpgsql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The function texts are frozen in storage/ledger_plpgsql.py (this migration's versions: TD_HOLD,
# TD_SETTLE_V3); a later change is a new constant there and a new migration.
TD_HOLD = ledger_plpgsql.TD_HOLD
TD_SETTLE = ledger_plpgsql.TD_SETTLE_V3
SIGNATURES = (ledger_plpgsql.TD_HOLD_SIGNATURE, ledger_plpgsql.TD_SETTLE_V3_SIGNATURE)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # exec_driver_sql: the bodies go to the server verbatim (no bind-parameter parsing).
    op.get_bind().exec_driver_sql(TD_HOLD)
    op.get_bind().exec_driver_sql(TD_SETTLE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in SIGNATURES:
        op.get_bind().exec_driver_sql(f"DROP FUNCTION IF EXISTS {signature}")

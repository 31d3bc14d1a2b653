"""The statements a batch line's fenced result runs inside its settlement's transaction
(billing/sqlite_jobs.py `settle_line`, billing/fastpath_pg.py): written once, per dialect.

    FENCE   the line leaves `running` for `done` with its result — only if its `lease` is still
            the one this attempt claimed (one row, or none: the claim was lost; then nothing
            else runs and the transaction changes nothing)
    COST    the line's charge, once the settlement computed it
    COUNT   the batch's counters: one more succeeded or errored line, its cost
"""

from __future__ import annotations

FENCE = (
    "UPDATE batch_lines SET state = 'done', outcome = ?, result = ?, lease_owner = NULL, "
    "lease_until = NULL WHERE batch_id = ? AND line = ? AND lease = ? AND state = 'running'"
)
COST = "UPDATE batch_lines SET cost = ? WHERE batch_id = ? AND line = ?"
COUNT = (
    "UPDATE batches SET succeeded = succeeded + ?, errored = errored + ?, cost = cost + ? "
    "WHERE id = ?"
)

PG_FENCE = (
    "UPDATE batch_lines SET state = 'done', outcome = $1, result = $2, lease_owner = NULL, "
    "lease_until = NULL WHERE batch_id = $3 AND line = $4 AND lease = $5 AND state = 'running'"
)
PG_COST = "UPDATE batch_lines SET cost = $1 WHERE batch_id = $2 AND line = $3"
PG_COUNT = (
    "UPDATE batches SET succeeded = succeeded + $1, errored = errored + $2, cost = cost + $3 "
    "WHERE id = $4"
)

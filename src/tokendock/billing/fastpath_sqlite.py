"""SQLite hot path: one writer thread, one job per ledger transaction, group commit.

Why: SQLite has one writer at a time anyway. Through aiosqlite every statement is a thread
round trip (~0.12 ms each here) and the write lock stays held across them; sixteen pooled
connections then fight for it in SQLite's sleeping busy handler. Here one thread owns one
plain `sqlite3` connection; `hold` and `settle` each put ONE job on its queue and await a
future. The thread takes whatever is queued (up to MAX_BATCH jobs), runs them in one
`BEGIN IMMEDIATE` … `COMMIT`, each inside its own SAVEPOINT, so a job that fails or is refused
rolls back alone, then hands all results back to the event loop in one wake-up. A result is
delivered only after its COMMIT succeeded; if the COMMIT fails, every job of the batch fails.

The SQL is the ledger's, written out: the conditional debit, the guarded
`UPDATE holds … WHERE status = 'open'`, append-only entries with unique idempotency keys.
Datetimes are written as SQLAlchemy writes them (`SQLITE_DATETIME`, UTC), so the rest of the
code reads and compares them as before. Other writers (the SQLAlchemy engine: credits, keys,
accounts) still work: they take the same write lock and wait in `busy_timeout`.

When the process is quiet (`quiet()`: few requests in flight) and the writer idle (nothing
queued, the connection free) a job runs inline on the event loop instead, under the same lock:
an uncontended transaction takes ~50 µs, less than the two thread hand-offs it saves. Under
load the thread is better: it runs SQLite on the other core while the loop serves requests.
Inline never waits: if another connection holds SQLite's write lock, BEGIN fails at once
(busy_timeout 0) and the job goes to the thread, which waits for it.

WAL checkpoints (copying the log back into the database, with an fsync) would otherwise run
inside whichever COMMIT crosses SQLite's 1,000-page threshold and stall that batch for
milliseconds; the writer's connection turns them off and a second thread runs a PASSIVE
checkpoint every CHECKPOINT_SECONDS, which never blocks the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tokendock.billing.fastpath import HELD, NO_CREDIT, OVER_LIMIT, SETTLED, SWEPT, Settled
from tokendock.storage.db import SQLITE_DATETIME, SQLITE_PRAGMAS

if TYPE_CHECKING:
    from tokendock.billing.ledger import UsageRow

log = logging.getLogger(__name__)

MAX_BATCH = 64  # jobs per COMMIT at most: bounds the latency one batch adds to its last job
CHECKPOINT_SECONDS = 1.0
BUSY_TIMEOUT = next(p for p in SQLITE_PRAGMAS if "busy_timeout" in p)

DEBIT = (
    "UPDATE accounts SET balance = balance - ? "
    "WHERE id = ? AND balance >= ? AND disabled = 0 RETURNING balance"
)
BALANCE = "SELECT balance FROM accounts WHERE id = ?"
RESERVE = (
    "UPDATE api_keys SET spent = spent + ? "
    "WHERE id = ? AND (spend_limit IS NULL OR spent + ? <= spend_limit)"
)
INSERT_HOLD = (
    "INSERT INTO holds (id, account_id, key_id, amount, status, request_id, owner, "
    "created_at, expires_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?)"
)
INSERT_ENTRY = (
    "INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
INSERT_NOTE = (
    "INSERT INTO ledger_entries (account_id, kind, amount, charged, hold_id, idempotency_key, "
    "reference, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
CLOSE_HOLD = "UPDATE holds SET status = ?, captured = ? WHERE id = ? AND status = 'open'"
MARK_LATE = "UPDATE holds SET status = 'late' WHERE id = ? AND status = 'swept'"
REFUND = "UPDATE accounts SET balance = balance + ? WHERE id = ? RETURNING balance"
DEBIT_ANY = "UPDATE accounts SET balance = balance - ? WHERE id = ? RETURNING balance"
UNRESERVE = "UPDATE api_keys SET spent = spent - ? WHERE id = ?"
UNRESERVE_USED = "UPDATE api_keys SET spent = spent - ?, last_used_at = ? WHERE id = ?"
KEY_ROOM = "SELECT spend_limit - spent FROM api_keys WHERE id = ?"
RESERVE_ANY = "UPDATE api_keys SET spent = spent + ?, last_used_at = ? WHERE id = ?"
RENEW = (
    "UPDATE holds SET expires_at = ? WHERE owner = ? AND status = 'open' "
    "AND id IN (SELECT value FROM json_each(?))"
)
INSERT_USAGE = (
    "INSERT INTO usage_records (request_id, account_id, key_id, model, prompt_tokens, "
    'completion_tokens, cost, status, finish_reason, latency_ms, ttft_ms, "user", created_at, '
    "deployment, estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _hold(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    amount: int,
    request_id: str,
    owner: str,
    at: datetime,
    expires_at: datetime,
) -> tuple[tuple[int, int], bool]:
    """((outcome, balance), keep): keep=False rolls the job's savepoint back."""
    rows = cur.execute(DEBIT, (amount, account_id, amount)).fetchall()
    if not rows:
        row = cur.execute(BALANCE, (account_id,)).fetchone()
        return (NO_CREDIT, int(row[0]) if row else 0), False
    if key_id is not None:
        cur.execute(RESERVE, (amount, key_id, amount))
        if cur.rowcount != 1:
            return (OVER_LIMIT, 0), False  # the rollback undoes the debit above
    created = at.strftime(SQLITE_DATETIME)
    cur.execute(
        INSERT_HOLD,
        (
            hold_id,
            account_id,
            key_id,
            amount,
            request_id,
            owner,
            created,
            expires_at.strftime(SQLITE_DATETIME),
        ),
    )
    cur.execute(INSERT_ENTRY, (account_id, "hold", -amount, 0, hold_id, "hold:" + hold_id, created))
    return (HELD, int(rows[0][0])), True


def _settle(
    cur: sqlite3.Cursor,
    hold_id: str,
    account_id: int,
    key_id: int | None,
    amount: int,
    charge: int,
    at: datetime,
    usage: UsageRow | None,
    swept: bool = False,
) -> tuple[Settled | None, bool]:
    """The SQL of td_settle (migration 0007), statement for statement."""
    ts = at.strftime(SQLITE_DATETIME)
    captured = min(charge, amount)
    cur.execute(CLOSE_HOLD, (SWEPT if swept else SETTLED, captured, hold_id))
    if cur.rowcount == 1:
        late = False
        refund = amount - captured
        want = charge - captured  # above the hold
        rows = cur.execute(REFUND, (refund, account_id)).fetchall()
        if not rows:
            raise LookupError(f"hold {hold_id}: account {account_id} does not exist")
        balance = int(rows[0][0])
        cur.execute(
            INSERT_ENTRY, (account_id, "capture", 0, captured, hold_id, "capture:" + hold_id, ts)
        )
        if refund:
            cur.execute(
                INSERT_ENTRY, (account_id, "release", refund, 0, hold_id, "release:" + hold_id, ts)
            )
        if key_id is not None:
            if usage is not None:
                cur.execute(UNRESERVE_USED, (refund, ts, key_id))
            else:
                cur.execute(UNRESERVE, (refund, key_id))
    else:
        # Not open: settled already (nothing to do), or released by a sweeper while this
        # request still ran: then what it produced is charged now, as a plain debit, once.
        if swept:
            return None, True
        cur.execute(MARK_LATE, (hold_id,))
        if cur.rowcount != 1:
            return None, True
        late, captured, want = True, 0, charge
        row = cur.execute(BALANCE, (account_id,)).fetchone()
        balance = int(row[0]) if row else 0
    extra = 0
    if want > 0:
        extra = min(want, balance)
        if key_id is not None:
            room = cur.execute(KEY_ROOM, (key_id,)).fetchone()
            if room is not None and room[0] is not None:
                extra = min(extra, max(int(room[0]), 0))
        if extra:
            balance = int(cur.execute(DEBIT_ANY, (extra, account_id)).fetchall()[0][0])
            if key_id is not None:
                cur.execute(RESERVE_ANY, (extra, ts, key_id))
        kind = "late" if late else "overage"
        note = f"{kind}: {want} wanted, {extra} charged, {want - extra} uncollected"
        cur.execute(
            INSERT_NOTE,
            (account_id, kind, -extra, extra, hold_id, f"{kind}:{hold_id}", note, ts),
        )
    charged = captured + extra
    if usage is not None:
        cur.execute(
            INSERT_USAGE,
            (
                usage.request_id,
                account_id,
                key_id,
                usage.model,
                usage.prompt_tokens,
                usage.completion_tokens,
                charged,
                usage.status,
                usage.finish_reason,
                usage.latency_ms,
                usage.ttft_ms,
                usage.user,
                ts,
                usage.deployment,
                usage.estimated,
            ),
        )
    return (charged, balance, late), True


def _renew(
    cur: sqlite3.Cursor, owner: str, hold_ids: list[str], expires_at: datetime
) -> tuple[int, bool]:
    cur.execute(RENEW, (expires_at.strftime(SQLITE_DATETIME), owner, json.dumps(hold_ids)))
    return cur.rowcount, True


@dataclass(slots=True)
class _Job:
    fn: Callable[..., tuple[Any, bool]]
    args: tuple[Any, ...]
    future: asyncio.Future[Any] | None  # None: nobody waits (an orphaned hold's release)
    loop: asyncio.AbstractEventLoop | None
    # For holds: called on the loop with the result when the caller was cancelled meanwhile,
    # so the hold it will never settle is released at once. Such jobs are skipped outright
    # when the caller is already gone before they run.
    orphan: Callable[[Any], None] | None = None


_STOP = None


class SqliteWriter:
    """The ledger's SQLite writer; started on first use, stopped by `close()`."""

    def __init__(self, path: str, quiet: Callable[[], bool] | None = None):
        self._path = path
        self._quiet = quiet
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._stopped = threading.Event()
        # The writer's connection, shared with inline jobs: whoever holds `_lock` uses it.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._cur: sqlite3.Cursor | None = None
        self.inline = 0  # jobs run inline on the loop (for the benchmark)
        self.jobs = 0  # run so far (for the benchmark: jobs / transactions = batch size)
        self.transactions = 0

    async def hold(
        self,
        hold_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        request_id: str,
        owner: str,
        at: datetime,
        expires_at: datetime,
    ) -> tuple[int, int]:
        def orphan(result: tuple[int, int]) -> None:
            if result[0] == HELD:
                self._submit_nowait(
                    _Job(_settle, (hold_id, account_id, key_id, amount, 0, at, None), None, None)
                )

        args = (hold_id, account_id, key_id, amount, request_id, owner, at, expires_at)
        result: tuple[int, int] = await self._submit(_hold, args, orphan)
        return result

    async def settle(
        self,
        hold_id: str,
        account_id: int,
        key_id: int | None,
        amount: int,
        charge: int,
        at: datetime,
        usage: UsageRow | None,
        swept: bool = False,
    ) -> Settled | None:
        args = (hold_id, account_id, key_id, amount, charge, at, usage, swept)
        result: Settled | None = await self._submit(_settle, args, None)
        return result

    async def renew(self, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
        result: int = await self._submit(_renew, (owner, hold_ids, expires_at), None)
        return result

    async def close(self) -> None:
        """Finish the queued jobs, then stop the thread and close its connection."""
        self._closed = True
        self._stopped.set()
        thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(thread.join)

    # -- the event-loop side ---------------------------------------------------------------

    async def _submit(
        self,
        fn: Callable[..., tuple[Any, bool]],
        args: tuple[Any, ...],
        orphan: Callable[[Any], None] | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = _Job(fn, args, future, loop, orphan)
        if not self._try_inline(job):
            self._submit_nowait(job)
        return await future

    def _try_inline(self, job: _Job) -> bool:
        """Run `job` now on this thread if the writer is idle; False to queue it instead."""
        if self._conn is None or not self._queue.empty():
            return False
        if self._quiet is not None and not self._quiet():
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            conn, cur = self._conn, self._cur
            if conn is None or cur is None:
                return False
            cur.execute("PRAGMA busy_timeout=0")
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return False  # another connection is writing: the thread will wait for it
            finally:
                cur.execute(BUSY_TIMEOUT)
            done = self._transaction(conn, cur, [job], begun=True)
        finally:
            self._lock.release()
        self.inline += 1
        self._deliver(done)
        return True

    def _submit_nowait(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name="ledger-sqlite", daemon=True)
                    thread.start()
                    self._thread = thread
                    threading.Thread(
                        target=self._checkpoint, name="ledger-checkpoint", daemon=True
                    ).start()
        self._queue.put(job)

    @staticmethod
    def _deliver(done: list[tuple[_Job, Any, BaseException | None]]) -> None:
        for job, result, error in done:
            future = job.future
            if future is None:
                continue
            if future.cancelled():
                if error is None and job.orphan is not None:
                    job.orphan(result)
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, cached_statements=64
        )
        try:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does it
            cur = conn.cursor()
            with self._lock:
                self._conn, self._cur = conn, cur
            while True:
                job = self._queue.get()
                if job is _STOP:
                    return
                batch = [job]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                with self._lock:
                    done = self._transaction(conn, cur, batch)
                self._send(done)
                if stop:
                    return
        finally:
            with self._lock:
                self._conn = self._cur = None
                conn.close()

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database now and then, off the writer's path."""
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stopped.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # a busy database: the next round catches up
                    log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def _transaction(
        self,
        conn: sqlite3.Connection,
        cur: sqlite3.Cursor,
        batch: list[_Job],
        *,
        begun: bool = False,
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run `batch` in one transaction (begun already when `begun`); (job, result, error)
        for each, once committed. The caller holds `_lock`."""
        # A hold whose caller is gone is not made at all (the race after this check is what
        # `orphan` is for).
        batch = [j for j in batch if not (j.orphan and j.future and j.future.cancelled())]
        if not batch:
            if begun:
                cur.execute("ROLLBACK")
            return []
        try:
            if not begun:
                cur.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:  # the uncontended case: the transaction is the savepoint
                result, keep = batch[0].fn(cur, *batch[0].args)
                cur.execute("COMMIT" if keep else "ROLLBACK")
                done: list[tuple[_Job, Any, BaseException | None]] = [(batch[0], result, None)]
            else:
                done = [self._savepoint(cur, job) for job in batch]
                cur.execute("COMMIT")
        except Exception as exc:  # BEGIN, a lone job, a savepoint or COMMIT: nothing written
            if conn.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ledger writer: ROLLBACK failed")
            return [(job, None, exc) for job in batch]
        self.jobs += len(batch)
        self.transactions += 1
        return done

    @staticmethod
    def _savepoint(cur: sqlite3.Cursor, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        """One job of a batch: whatever it did is undone alone if it fails or refuses."""
        cur.execute("SAVEPOINT job")
        try:
            result, keep = job.fn(cur, *job.args)
        except Exception as exc:
            cur.execute("ROLLBACK TO job")
            cur.execute("RELEASE job")
            return job, None, exc
        if not keep:
            cur.execute("ROLLBACK TO job")
        cur.execute("RELEASE job")
        return job, result, None

    @staticmethod
    def _send(done: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]]
        by_loop = {}
        for item in done:
            loop = item[0].loop
            if loop is None:  # a fire-and-forget job: only its failure is worth a log line
                if item[2] is not None:
                    log.error("ledger job %s failed", item[0].fn.__name__, exc_info=item[2])
                continue
            by_loop.setdefault(loop, []).append(item)
        for loop, items in by_loop.items():
            # RuntimeError: that loop is closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(SqliteWriter._deliver, items)

"""SQLite hot path: one writer thread, one job per ledger transaction, group commit.

Why: SQLite has one writer at a time anyway. Through aiosqlite every statement is a thread
round trip (~0.12 ms each here) and the write lock stays held across them; sixteen pooled
connections then fight for it in SQLite's sleeping busy handler. Here one thread owns one
plain `sqlite3` connection; `hold` and `settle` each put ONE job on its queue and await a
future. The thread takes whatever is queued (up to MAX_BATCH jobs), runs them in one
`BEGIN IMMEDIATE` … `COMMIT`, then hands all results back to the event loop in one wake-up. A
refusing job writes nothing (billing/sqlite_jobs.py), so jobs need no SAVEPOINT of their own;
should one raise, the batch is rolled back and run again with each job in its own SAVEPOINT,
so the failing one fails alone. A result is delivered only after its COMMIT succeeded; if the
COMMIT fails, every job of the batch fails.

The jobs (the ledger's SQL, from storage/ledger_sql.py) are in billing/sqlite_jobs.py. Other
writers (the SQLAlchemy engine: credits, keys, accounts) still work: they take the same write
lock. The writer's connection never sleeps in SQLite's busy handler (busy_timeout 0): BEGIN
IMMEDIATE is the only statement that waits for the lock, and the thread retries it itself for
up to BUSY_SECONDS (the engine's busy_timeout).

When the process is quiet (`load.quiet()`: few requests in flight) and the writer idle (nothing
queued, the connection free) a job runs inline on the event loop instead, under the same lock:
an uncontended transaction takes ~50 µs, less than the two thread hand-offs it saves. Under
load the thread is better: it runs SQLite on the other core while the loop serves requests.
Inline never waits: if another connection holds SQLite's write lock, BEGIN fails at once
and the job goes to the thread, which waits for it.

WAL checkpoints (copying the log back into the database, with an fsync) would otherwise run
inside whichever COMMIT crosses SQLite's 1,000-page threshold and stall that batch for
milliseconds; the writer's connection turns them off and a second thread runs a PASSIVE
checkpoint every CHECKPOINT_SECONDS, which never blocks the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokendock.billing import sqlite_jobs as jobs
from tokendock.billing.load import Load
from tokendock.billing.records import HELD, LineResult, Settled, UsageRow
from tokendock.storage.db import SQLITE_PRAGMAS

log = logging.getLogger(__name__)

MAX_BATCH = 64  # jobs per COMMIT at most: bounds the latency one batch adds to its last job
CHECKPOINT_SECONDS = 1.0
BUSY_SECONDS = 10.0  # how long the thread waits for SQLite's write lock (db.SQLITE_PRAGMAS')


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
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

    def __init__(self, path: str, load: Load | None = None):
        self._path = path
        self._load = load
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
                    _Job(
                        jobs.settle, (hold_id, account_id, key_id, amount, 0, at, None), None, None
                    )
                )

        args = (hold_id, account_id, key_id, amount, request_id, owner, at, expires_at)
        result: tuple[int, int] = await self._submit(jobs.hold, args, orphan)
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
        fence: LineResult | None = None,
    ) -> Settled | None:
        if fence is not None:
            line = (hold_id, account_id, key_id, amount, charge, at, usage, fence)
            fenced: Settled | None = await self._submit(jobs.settle_line, line, None)
            return fenced
        args = (hold_id, account_id, key_id, amount, charge, at, usage, swept)
        result: Settled | None = await self._submit(jobs.settle, args, None)
        return result

    async def renew(self, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
        result: int = await self._submit(jobs.renew, (owner, hold_ids, expires_at), None)
        return result

    def trace(self, callback: Callable[[str], None] | None) -> bool:
        """Call `callback` with each SQL statement the writer's connection runs from now on
        (None: stop), for the money benchmark's count; False before the writer has started."""
        with self._lock:
            if self._conn is None:
                return False
            self._conn.set_trace_callback(callback)
            return True

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
        fn: Callable[..., Any],
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
        if self._load is not None and not self._load.quiet():
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            conn, cur = self._conn, self._cur
            if conn is None or cur is None:
                return False
            try:
                cur.execute("BEGIN IMMEDIATE")  # busy_timeout 0: never waits
            except sqlite3.OperationalError:
                return False  # another connection is writing: the thread will wait for it
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
            conn.execute("PRAGMA busy_timeout=0")  # only BEGIN waits, in _begin
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
        failed = False
        try:
            if not begun:
                self._begin(cur)
            try:
                done: list[tuple[_Job, Any, BaseException | None]] = [
                    (job, job.fn(cur, *job.args), None) for job in batch
                ]
            except Exception as exc:
                if len(batch) == 1:
                    raise
                failed = True  # one job raised: run the batch again, each job alone
                log.debug("ledger writer: a job of %d failed (%r): savepoints", len(batch), exc)
                cur.execute("ROLLBACK")
                self._begin(cur)
                done = [self._savepoint(cur, job) for job in batch]
            cur.execute("COMMIT")
        except Exception as exc:  # BEGIN, a lone job or COMMIT: nothing written
            if conn.in_transaction:
                try:
                    cur.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("ledger writer: ROLLBACK failed")
            return [(job, None, exc) for job in batch]
        self.jobs += len(batch)
        self.transactions += 1 + failed
        return done

    @staticmethod
    def _begin(cur: sqlite3.Cursor) -> None:
        """BEGIN IMMEDIATE, waiting up to BUSY_SECONDS for another connection's write lock."""
        deadline = 0.0
        pause = 0.0005
        while True:
            try:
                cur.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                now = time.monotonic()
                deadline = deadline or now + BUSY_SECONDS
                if now >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.01)

    @staticmethod
    def _savepoint(cur: sqlite3.Cursor, job: _Job) -> tuple[_Job, Any, BaseException | None]:
        """One job of a batch: whatever it did is undone alone if it fails."""
        cur.execute("SAVEPOINT job")
        try:
            result = job.fn(cur, *job.args)
        except Exception as exc:
            cur.execute("ROLLBACK TO job")
            cur.execute("RELEASE job")
            return job, None, exc
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

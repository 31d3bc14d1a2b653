"""SQLite hot path: one writer thread, one job per ledger transaction, group commit.

Why: SQLite has one writer at a time anyway. Through aiosqlite every statement is a thread
round trip (~0.12 ms each here) and the write lock stays held across them; sixteen pooled
connections then fight for it in SQLite's sleeping busy handler. Here one thread owns one
plain `sqlite3` connection; `hold` and `settle` each put ONE job on its queue and await a
future. The thread takes whatever is queued (up to MAX_BATCH jobs), runs them in one
`BEGIN IMMEDIATE` … `COMMIT`, each inside its own SAVEPOINT, so a job that fails or is refused
rolls back alone, then hands all results back to the event loop in one wake-up. A result is
delivered only after its COMMIT succeeded; if the COMMIT fails, every job of the batch fails.

The jobs (the ledger's SQL, written out) are in billing/sqlite_jobs.py. Other writers (the
SQLAlchemy engine: credits, keys, accounts) still work: they take the same write lock and wait
in `busy_timeout`.

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
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tokendock.billing import sqlite_jobs as jobs
from tokendock.billing.fastpath import HELD, Settled
from tokendock.storage.db import SQLITE_PRAGMAS

if TYPE_CHECKING:
    from tokendock.billing.ledger import UsageRow

log = logging.getLogger(__name__)

MAX_BATCH = 64  # jobs per COMMIT at most: bounds the latency one batch adds to its last job
CHECKPOINT_SECONDS = 1.0
BUSY_TIMEOUT = next(p for p in SQLITE_PRAGMAS if "busy_timeout" in p)


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
    ) -> Settled | None:
        args = (hold_id, account_id, key_id, amount, charge, at, usage, swept)
        result: Settled | None = await self._submit(jobs.settle, args, None)
        return result

    async def renew(self, owner: str, hold_ids: list[str], expires_at: datetime) -> int:
        result: int = await self._submit(jobs.renew, (owner, hold_ids, expires_at), None)
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

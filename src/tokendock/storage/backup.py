"""Online backup and restore of the whole database, while servers keep serving.

SQLite: the sqlite3 online backup API copies every page in ONE step, inside one read
transaction: a consistent snapshot, and in WAL mode writers carry on meanwhile. The copy is
written next to DEST and renamed into place once complete and checked, so DEST is never a
half-written file. Restore copies the backup INTO the target through the same API, under
SQLite's own locking: readers see the old database or the new one, never a mix.

PostgreSQL: `pg_dump -Fc` (one REPEATABLE READ snapshot, consistent while writers carry on)
and `pg_restore --single-transaction` (all or nothing). Both need the PostgreSQL client tools
on PATH, of the server's major version or newer.

A backup taken under traffic holds the requests in flight at that moment as open holds; the
restored database will never see those requests end, so `tokendock restore` releases them.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tokendock.storage.tables import holds

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_CUSTOM_MAGIC = b"PGDMP"
BUSY_MS = 10_000


class BackupError(Exception):
    """A backup or restore could not be made; the message says why and what to do."""


def backend(url: str) -> str:
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support SQLite and PostgreSQL databases, not {name}")
    return name


def file_kind(path: Path) -> str:
    """'sqlite' or 'postgresql': which kind of backup the file at `path` is."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read the backup {path}: {exc.strerror}") from exc
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(PG_CUSTOM_MAGIC):
        return "postgresql"
    raise BackupError(f"{path} is not a TokenDock backup (neither SQLite nor pg_dump -Fc)")


def backup(url: str, dest: Path, *, force: bool = False) -> None:
    """Write a consistent copy of the database at `url` to `dest`."""
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists; choose another name or pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        if backend(url) == "sqlite":
            _sqlite_backup(_sqlite_file(url), partial)
        else:
            _pg_run("pg_dump", ["--format=custom", f"--file={partial}"], url)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


def check_kind(url: str, src: Path) -> str:
    """The backend of `url`, after checking that `src` is a backup of that kind."""
    kind, target = file_kind(src), backend(url)
    if kind != target:
        raise BackupError(f"{src} is a {kind} backup; restore it into a {kind} database URL")
    return target


def restore(url: str, src: Path, *, clean: bool) -> None:
    """Load the backup `src` into the database at `url` (`clean`: replace what is there)."""
    if check_kind(url, src) == "sqlite":
        _sqlite_restore(src, _sqlite_file(url))
    else:
        options = ["--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error"]
        _pg_run("pg_restore", [*options, *(["--clean", "--if-exists"] if clean else [])], url, src)


async def has_tables(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: inspect(c).get_table_names())
    return bool(names)


async def open_hold_owners(engine: AsyncEngine) -> list[str]:
    """The processes that own open holds (after a restore: those in flight at backup time)."""
    query = select(holds.c.owner).where(holds.c.status == "open").distinct()
    async with engine.connect() as conn:
        return [str(row[0]) for row in (await conn.execute(query)).all()]


# -- SQLite ------------------------------------------------------------------------------------


def _sqlite_file(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("backups need a SQLite database file, not an in-memory database")
    return Path(database)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    return conn


def _sqlite_backup(path: Path, dest: Path) -> None:
    if not path.is_file():
        raise BackupError(f"there is no database at {path}")
    try:
        with closing(_connect(path)) as src, closing(_connect(dest)) as copy:
            src.backup(copy)  # one step: one read transaction, one snapshot
            if (problem := copy.execute("PRAGMA quick_check").fetchone()[0]) != "ok":
                raise BackupError(f"the copy failed its integrity check: {problem}")
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup failed: {exc}") from exc


def _sqlite_restore(src: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with closing(_connect(src)) as backup_db, closing(_connect(path)) as target:
            tables = {r[0] for r in backup_db.execute("SELECT name FROM sqlite_master")}
            if "alembic_version" not in tables:
                raise BackupError(f"{src} is a SQLite file but not a TokenDock database")
            backup_db.backup(target)
            target.execute("PRAGMA journal_mode=WAL")
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite restore failed: {exc}") from exc


# -- PostgreSQL --------------------------------------------------------------------------------


def _pg_run(tool: str, options: list[str], url: str, src: Path | None = None) -> None:
    program = shutil.which(tool)
    if program is None:
        raise BackupError(
            f"{tool} was not found on PATH: install the PostgreSQL client tools of the "
            "server's major version or newer (Debian/Ubuntu: apt-get install postgresql-client)"
        )
    u = make_url(url)
    env = dict(os.environ)
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)  # never on the command line (visible in ps)
    ssl = u.query.get("ssl") or u.query.get("sslmode")
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    args = [program, *options, f"--host={u.host or 'localhost'}", f"--port={u.port or 5432}"]
    if u.username:
        args.append(f"--username={u.username}")
    args += ["--no-password", f"--dbname={u.database}", *([str(src)] if src else [])]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}")

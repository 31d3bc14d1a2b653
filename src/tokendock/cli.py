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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from tokendock.billing.ledger import Ledger
from tokendock.billing.money import AmountError, format_credits, parse_credits
from tokendock.catalog import Catalog, CatalogError
from tokendock.config import Settings
from tokendock.errors import TokenDockError
from tokendock.inference.weights.files import ModelFileError, resolve_gguf
from tokendock.observability import configure_logging
from tokendock.services.accounts import AccountService
from tokendock.storage import backup as backup_store
from tokendock.storage.accounts import AccountStore
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

    accounts = sub.add_parser("accounts", help="accounts").add_subparsers(dest="sub", required=True)
    create = accounts.add_parser("create", parents=[common], help="create an account")
    create.add_argument("email")
    create.add_argument("--password", help="default: random, printed")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--grant", default="0", help="starting credits")
    for verb, what in (
        ("disable", "disable an account (ends its running work)"),
        ("enable", "enable a disabled account"),
    ):
        accounts.add_parser(verb, parents=[common], help=what).add_argument("email")

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="sub", required=True)
    kcreate = keys.add_parser("create", parents=[common], help="create a key (shown once)")
    kcreate.add_argument("email")
    kcreate.add_argument("--name", default="default")
    kcreate.add_argument("--expires-days", type=float)
    kcreate.add_argument("--spend-limit", help="credits this key may spend in total")
    kcreate.add_argument("--allow-models", dest="allowed", help="comma-separated allow-list")
    klist = keys.add_parser("list", parents=[common], help="list an account's keys")
    klist.add_argument("email")
    krevoke = keys.add_parser("revoke", parents=[common], help="revoke a key")
    krevoke.add_argument("email")
    krevoke.add_argument("key_id", type=int)

    credits = sub.add_parser("credits", help="credits").add_subparsers(dest="sub", required=True)
    grant = credits.add_parser("grant", parents=[common], help="add credits (idempotent)")
    grant.add_argument("email")
    grant.add_argument("amount", help="credits, e.g. 12.50")
    grant.add_argument("--reference", required=True, help="idempotency reference, e.g. invoice")
    grant.add_argument("--kind", choices=["grant", "topup", "adjustment"], default="topup")

    codes = sub.add_parser("codes", help="redemption codes").add_subparsers(
        dest="sub", required=True
    )
    ccreate = codes.add_parser("create", parents=[common], help="create single-use codes")
    ccreate.add_argument("amount", help="credits per code")
    ccreate.add_argument("--count", type=int, default=1)

    usage = sub.add_parser("usage", parents=[common], help="recent usage records")
    usage.add_argument("--account", help="email (default: every account)")
    usage.add_argument("--limit", type=int, default=50)

    limits = sub.add_parser("limits", help="rate limits").add_subparsers(dest="sub", required=True)
    lset = limits.add_parser("set", parents=[common], help="override limits (0 = unlimited)")
    who = lset.add_mutually_exclusive_group(required=True)
    who.add_argument("--account", help="account email")
    who.add_argument("--key", type=int, help="API key id")
    for flag in ("--rpm", "--tpm", "--concurrent"):
        lset.add_argument(flag, type=int)
    lset.add_argument("--tier", help="account tier (names defaults in TOKENDOCK_RATE_TIERS)")

    ledger = sub.add_parser("ledger", help="the credit ledger").add_subparsers(
        dest="sub", required=True
    )
    ledger.add_parser("verify", parents=[common], help="prove balance = Σ entries")

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
        return _run_admin(command, args, settings)
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
        price = f"{spec.price.input}/{spec.price.output} per 1M" if spec.price else "UNPRICED"
        print(f"{spec.id}\t{spec.engine}\tcontext {spec.context_length}\t{price}\t{source}")
    return 0


def _with_service(settings: Settings, work: Callable[[AccountService], Awaitable[int]]) -> int:
    async def run() -> int:
        engine = create_engine(settings.database_url_or_default())
        ledger = Ledger(engine, owner=settings.instance_name(), hold_ttl=timedelta(hours=1))
        try:
            return await work(AccountService(AccountStore(engine), ledger))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _run_admin(command: str, args: argparse.Namespace, settings: Settings) -> int:
    async def work(svc: AccountService) -> int:
        if command == "accounts create":
            password = args.password or secrets.token_urlsafe(12)
            grant = parse_credits(args.grant, "--grant")
            account_id = await svc.create_account(
                args.email, password, is_admin=args.admin, grant=grant
            )
            print(
                f"account {account_id} {args.email}"
                + ("" if args.password else f" password {password}")
            )
        elif command in ("accounts disable", "accounts enable"):
            account_id = await svc.account_id(args.email)
            disabled = command == "accounts disable"
            await svc.set_disabled(account_id, disabled)
            if disabled:  # as on the admin page: its dashboard sessions end too
                await svc.sessions.end_all(account_id)
            print(f"account {account_id} {args.email} {'disabled' if disabled else 'enabled'}")
        elif command == "keys create":
            expires = (
                datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
            )
            limit = parse_credits(args.spend_limit, "--spend-limit") if args.spend_limit else None
            allowed = [m.strip() for m in args.allowed.split(",")] if args.allowed else None
            key = await svc.create_key(
                await svc.account_id(args.email),
                args.name,
                expires_at=expires,
                spend_limit=limit,
                models=allowed,
            )
            print(f"key {key.id}: {key.secret}\n(shown once; store it now)")
        elif command == "keys list":
            for k in await svc.store.list_keys(await svc.account_id(args.email)):
                state = "revoked" if k.revoked_at else "active"
                print(
                    f"{k.id}\t{k.name}\t{k.prefix}…{k.last4}\t{state}\tcreated {k.created_at:%F}"
                    f"\tlast used {k.last_used_at or '-'}"
                )
        elif command == "keys revoke":
            await svc.revoke_key(await svc.account_id(args.email), args.key_id)
            print(f"key {args.key_id} revoked")
        elif command == "credits grant":
            amount = parse_credits(args.amount, "amount")
            account_id = await svc.account_id(args.email)
            applied = await svc.ledger.credit(
                account_id,
                amount,
                kind=args.kind,
                idempotency_key=f"{args.kind}:{args.reference}",
                reference=args.reference,
            )
            balance = await svc.ledger.balance(account_id)
            note = "" if applied else " (already applied for this reference; nothing changed)"
            print(f"balance {format_credits(balance)}{note}")
        elif command == "codes create":
            for code in await svc.create_codes(parse_credits(args.amount, "amount"), args.count):
                print(code)
        elif command == "usage":
            who = await svc.account_id(args.account) if args.account else None
            for r in await svc.store.usage(who, args.limit):
                print(
                    f"{r['created_at']:%F %T}\t{r['request_id']}\tacct {r['account_id']}\t"
                    f"{r['model']}\t{r['prompt_tokens']}+{r['completion_tokens']} tok\t"
                    f"{format_credits(r['cost'])}\t{r['status']}\t{r['finish_reason']}"
                )
        elif command == "limits set":
            target = await svc.account_id(args.account) if args.account else None
            ok = await svc.store.set_limits(
                account_id=target,
                key_id=args.key,
                rpm=args.rpm,
                tpm=args.tpm,
                concurrent=args.concurrent,
                tier=args.tier,
            )
            if not ok:
                print("no such account or key", file=sys.stderr)
                return 1
            print("limits updated (in effect within the key cache time, 1 s by default)")
        elif command == "ledger verify":
            problems = await svc.ledger.verify()
            for p in problems:
                print(p)
            print(f"open holds: {await svc.ledger.open_holds()}")
            print("ledger OK" if not problems else f"{len(problems)} problem(s)")
            return 1 if problems else 0
        return 0

    return _with_service(settings, work)


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

    return _with_service(settings, work)


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

    _with_service(settings, work)

"""The operator's admin commands: accounts, keys, credits, codes, usage, limits, the ledger.

Each command is one coroutine over an `AccountService` opened on the configured database;
`run` picks it by name ("keys create") and returns the process's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

from tokendock.billing.ledger import Ledger
from tokendock.billing.money import format_credits, parse_credits
from tokendock.config import Settings
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine

Work = Callable[[AccountService], Awaitable[int]]
Command = Callable[[AccountService, argparse.Namespace], Awaitable[int]]


def with_service(settings: Settings, work: Work) -> int:
    """Runs `work` on an account service over the configured database, then disposes of it."""

    async def run() -> int:
        engine = create_engine(settings.database_url_or_default())
        ledger = Ledger(engine, owner=settings.instance_name(), hold_ttl=timedelta(hours=1))
        try:
            return await work(AccountService(AccountStore(engine), ledger))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run(command: str, args: argparse.Namespace, settings: Settings) -> int:
    """Runs the admin command named `command` (as parsed by `add_parsers`)."""
    handler = COMMANDS[command]
    return with_service(settings, lambda svc: handler(svc, args))


# argparse keeps the subparsers type private, and it is not subscriptable at run time.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    """The admin commands' arguments, each parser taking `common`'s database options."""
    _add_account_parsers(sub, common)
    _add_money_parsers(sub, common)


def _add_account_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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


def _add_money_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
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


async def _create_account(svc: AccountService, args: argparse.Namespace) -> int:
    password = args.password or secrets.token_urlsafe(12)
    grant = parse_credits(args.grant, "--grant")
    account_id = await svc.create_account(args.email, password, is_admin=args.admin, grant=grant)
    print(f"account {account_id} {args.email}" + ("" if args.password else f" password {password}"))
    return 0


async def _set_disabled(svc: AccountService, email: str, disabled: bool) -> int:
    account_id = await svc.account_id(email)
    await svc.set_disabled(account_id, disabled)
    if disabled:  # as on the admin page: its dashboard sessions end too
        await svc.sessions.end_all(account_id)
    print(f"account {account_id} {email} {'disabled' if disabled else 'enabled'}")
    return 0


async def _disable_account(svc: AccountService, args: argparse.Namespace) -> int:
    return await _set_disabled(svc, args.email, True)


async def _enable_account(svc: AccountService, args: argparse.Namespace) -> int:
    return await _set_disabled(svc, args.email, False)


async def _create_key(svc: AccountService, args: argparse.Namespace) -> int:
    expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
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
    return 0


async def _list_keys(svc: AccountService, args: argparse.Namespace) -> int:
    for k in await svc.store.list_keys(await svc.account_id(args.email)):
        state = "revoked" if k.revoked_at else "active"
        print(
            f"{k.id}\t{k.name}\t{k.prefix}…{k.last4}\t{state}\tcreated {k.created_at:%F}"
            f"\tlast used {k.last_used_at or '-'}"
        )
    return 0


async def _revoke_key(svc: AccountService, args: argparse.Namespace) -> int:
    await svc.revoke_key(await svc.account_id(args.email), args.key_id)
    print(f"key {args.key_id} revoked")
    return 0


async def _grant_credits(svc: AccountService, args: argparse.Namespace) -> int:
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
    return 0


async def _create_codes(svc: AccountService, args: argparse.Namespace) -> int:
    for code in await svc.create_codes(parse_credits(args.amount, "amount"), args.count):
        print(code)
    return 0


async def _usage(svc: AccountService, args: argparse.Namespace) -> int:
    who = await svc.account_id(args.account) if args.account else None
    for r in await svc.store.usage(who, args.limit):
        print(
            f"{r['created_at']:%F %T}\t{r['request_id']}\tacct {r['account_id']}\t"
            f"{r['model']}\t{r['prompt_tokens']}+{r['completion_tokens']} tok\t"
            f"{format_credits(r['cost'])}\t{r['status']}\t{r['finish_reason']}"
        )
    return 0


async def _set_limits(svc: AccountService, args: argparse.Namespace) -> int:
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
    return 0


async def _verify_ledger(svc: AccountService, args: argparse.Namespace) -> int:
    problems = await svc.ledger.verify()
    for p in problems:
        print(p)
    print(f"open holds: {await svc.ledger.open_holds()}")
    print("ledger OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


COMMANDS: dict[str, Command] = {
    "accounts create": _create_account,
    "accounts disable": _disable_account,
    "accounts enable": _enable_account,
    "keys create": _create_key,
    "keys list": _list_keys,
    "keys revoke": _revoke_key,
    "credits grant": _grant_credits,
    "codes create": _create_codes,
    "usage": _usage,
    "limits set": _set_limits,
    "ledger verify": _verify_ledger,
}

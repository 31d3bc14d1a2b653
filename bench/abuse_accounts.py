"""Many accounts and keys for the abuse bench in one process (the `tokendock` CLI makes one per
start-up, seconds each on a busy machine).

    python -m bench.abuse_accounts SPEC_JSON     (with the server's TOKENDOCK_* settings)

SPEC_JSON is a list of {"email", "grant" (credits, a string), "unlimited" (bool)}; an unlimited
account and its key get every rate limit lifted (0), the others keep the server's default
tier. Prints one JSON list of {"email", "account_id", "key_id", "key"}.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from datetime import timedelta
from typing import Any

from tokendock.billing.ledger import Ledger
from tokendock.billing.money import parse_credits
from tokendock.config import Settings
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine


async def create(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = Settings()
    engine = create_engine(settings.database_url_or_default())
    ledger = Ledger(engine, owner="bench-abuse", hold_ttl=timedelta(hours=1))
    svc = AccountService(AccountStore(engine), ledger)
    out = []
    try:
        for spec in specs:
            grant = parse_credits(spec["grant"], "grant")
            account_id = await svc.create_account(
                spec["email"], secrets.token_urlsafe(12), grant=grant
            )
            key = await svc.create_key(account_id, "abuse-bench")
            if spec.get("unlimited"):
                await svc.store.set_limits(account_id=account_id, rpm=0, tpm=0, concurrent=0)
                await svc.store.set_limits(key_id=key.id, rpm=0, tpm=0, concurrent=0)
            out.append(
                {
                    "email": spec["email"],
                    "account_id": account_id,
                    "key_id": key.id,
                    "key": key.secret,
                }
            )
    finally:
        await engine.dispose()
    return out


def main() -> None:
    print(json.dumps(asyncio.run(create(json.loads(sys.argv[1])))))


if __name__ == "__main__":
    main()

"""The money in a test server's database, read straight from its tables (also while the server
is down): balances, the ledger's sums, open holds and usage rows. The fault, shutdown and backup
tests check with it that no credit was created or lost."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from tests.e2e.server import Server
from tokendock.storage.db import create_engine
from tokendock.storage.tables import accounts, holds, ledger_entries, usage_records


@dataclass(frozen=True)
class Money:
    balances: dict[str, int]  # email -> available balance
    entry_sums: dict[str, int]  # email -> Σ ledger entries
    open_holds: int
    usage: list[dict[str, Any]]  # every usage row, oldest first, with the account's email
    entries: dict[str, tuple[Any, ...]]  # idempotency key -> (email, kind, amount, charged, hold)
    holds: dict[str, str]  # hold id -> status

    def charged(self, email: str) -> int:
        return sum(int(r["cost"]) for r in self.usage if r["email"] == email)


def read(database_url: str) -> Money:
    async def run() -> Money:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                emails = {
                    r.id: r.email
                    for r in await conn.execute(select(accounts.c.id, accounts.c.email))
                }
                balances = {
                    emails[r.id]: int(r.balance)
                    for r in await conn.execute(select(accounts.c.id, accounts.c.balance))
                }
                sums = select(
                    ledger_entries.c.account_id, func.sum(ledger_entries.c.amount)
                ).group_by(ledger_entries.c.account_id)
                entry_sums = {emails[a]: int(s) for a, s in await conn.execute(sums)}
                opened = select(func.count()).select_from(holds).where(holds.c.status == "open")
                open_holds = int((await conn.execute(opened)).scalar_one())
                rows = await conn.execute(select(usage_records).order_by(usage_records.c.id))
                usage = [{**r._mapping, "email": emails[r.account_id]} for r in rows]
                entries = {
                    r.idempotency_key: (
                        emails[r.account_id],
                        r.kind,
                        int(r.amount),
                        int(r.charged),
                        r.hold_id,
                    )
                    for r in await conn.execute(select(ledger_entries))
                }
                states = await conn.execute(select(holds.c.id, holds.c.status))
                hold_states = {str(r.id): str(r.status) for r in states}
        finally:
            await engine.dispose()
        return Money(balances, entry_sums, open_holds, usage, entries, hold_states)

    return asyncio.run(run())


def verify(server: Server) -> int:
    """`tokendock ledger verify` passes; returns the number of open holds it reports."""
    out = server.cli("ledger", "verify")
    assert "ledger OK" in out, out
    match = re.search(r"open holds: (\d+)", out)
    assert match, out
    return int(match.group(1))


def assert_adds_up(server: Server, grants: dict[str, int]) -> Money:
    """`ledger verify` OK, no hold open, and for each account: its balance is what it was
    granted minus what its usage rows were charged."""
    assert verify(server) == 0
    money = read(server.database_url)
    assert money.open_holds == 0
    assert money.balances == {e: money.entry_sums.get(e, 0) for e in money.balances}
    for email, granted in grants.items():
        assert money.balances[email] == granted - money.charged(email), email
    return money

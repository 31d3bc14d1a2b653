"""Property tests of the ledger (hypothesis): random programs of grant / hold / capture /
release / over-hold settle / sweep / crash-restart, against SQLite and (with
TOKENDOCK_TEST_POSTGRES_URL) PostgreSQL, checked against a model of the rules in
billing/ledger.py after every step:

- every account's balance equals Σ its ledger entries, is never negative, and is what the
  model predicts (captures, refunds, excess debits capped at the balance and the key's limit);
- every hold leaves `open` exactly once (one capture entry) and is charged late at most once;
- `verify()` reports nothing but the late settlements of holds a sweeper took.

Two processes share the database: A renews its holds (long TTL), B never does (its holds are
past their TTL at once, as if its renewal had stalled), so A's sweeps take B's running holds
and B's later settlements are late. A crash drops a process's Ledger with holds open; its
successor (same instance name) releases them at start-up, as `serve` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from sqlalchemy import func, select

from tests.e2e.server import POSTGRES_URL, new_database
from tests.integration.conftest import BACKENDS
from tokendock.billing.ledger import Hold, Ledger, Settlement, UsageRow
from tokendock.errors import InsufficientCredit, SpendLimitReached
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade
from tokendock.storage.tables import holds, ledger_entries

LIVE = timedelta(hours=1)  # process A: renewed, never swept in a test
STALLED = timedelta(seconds=-1)  # process B: past its TTL from the start
LIMIT = 20_000  # account 0's key spend limit (account 1 holds without a key)

ACCOUNT = st.integers(0, 1)
PROCESS = st.sampled_from("BA")
GRANT = st.tuples(st.just("grant"), ACCOUNT, st.integers(1, 6_000))
# A hold of PCT % of the balance (above 100: refused), a settlement of PCT % of the hold (above
# 100: over the hold), so that most steps do something whatever the numbers drawn.
HOLD = st.tuples(st.just("hold"), PROCESS, ACCOUNT, st.integers(0, 110))
SETTLE = st.tuples(st.just("settle"), st.integers(0, 50), st.integers(-1, 300))
KINDS = {
    "grant": GRANT,
    "hold": HOLD,
    "settle": SETTLE,
    "burst": st.tuples(st.just("burst"), st.integers(0, 3)),  # settle A's open holds at once
    "sweep": st.tuples(st.just("sweep")),  # A's sweeper
    "crash": st.tuples(st.just("crash"), PROCESS),
}
# Drawn by name: holds and settlements most often (hypothesis favours the first entries).
MIX = ["hold", "settle", "sweep", "hold", "settle", "sweep", "grant", "settle", "burst", "crash"]
STEP = st.sampled_from(MIX).flatmap(lambda kind: KINDS[kind])
START = st.tuples(
    st.tuples(st.just("grant"), st.just(0), st.integers(1_000, 50_000)),
    st.tuples(st.just("grant"), st.just(1), st.integers(1_000, 50_000)),
)
EXAMPLES = 40 if POSTGRES_URL is None else 20  # per backend; the file runs in well under 60 s


def note(text: str) -> None:
    """Counted in --hypothesis-show-statistics (outside a hypothesis test: ignored)."""
    with contextlib.suppress(InvalidArgument):
        event(text)


@dataclass
class Model:
    """What the ledger's rules say the database must hold."""

    balance: list[int] = field(default_factory=lambda: [0, 0])
    spent: int = 0  # account 0's key
    status: dict[str, str] = field(default_factory=dict)  # hold id -> open/settled/swept/late
    late_charges: int = 0  # late settlements that charged something: verify() reports each

    def excess(self, account: int, want: int) -> int:
        extra = min(want, self.balance[account])
        if account == 0:
            extra = min(extra, max(LIMIT - self.spent, 0))
        return max(extra, 0)

    def settle(self, hold: Hold, account: int, charge: int) -> Settlement | None:
        charge = max(charge, 0)
        state = self.status[hold.id]
        if state == "open":
            captured = min(charge, hold.amount)
            self.balance[account] += hold.amount - captured
            if account == 0:
                self.spent -= hold.amount - captured
            want, late = charge - captured, False
            self.status[hold.id] = "settled"
        elif state == "swept":
            captured, want, late = 0, charge, True
            self.status[hold.id] = "late"
        else:
            return None
        extra = self.excess(account, want) if want > 0 else 0
        self.balance[account] -= extra
        if account == 0:
            self.spent += extra
        if late and want > 0:
            self.late_charges += 1
        charged = captured + extra
        return Settlement(charged, self.balance[account], charge - charged, late)

    def release(self, hold: Hold, account: int) -> None:
        self.status[hold.id] = "swept"
        self.balance[account] += hold.amount
        if account == 0:
            self.spent -= hold.amount


@dataclass
class World:
    url: str
    engine: Any
    accounts: list[int]
    key: int
    procs: dict[str, Ledger]
    model: Model = field(default_factory=Model)
    made: list[tuple[Hold, str, int]] = field(default_factory=list)  # hold, process, account
    dead: set[str] = field(default_factory=set)  # holds of crashed processes

    def ledger(self, name: str) -> Ledger:
        ttl = LIVE if name == "A" else STALLED
        return Ledger(self.engine, owner=f"proc-{name}-{self.accounts[0]}", hold_ttl=ttl)

    def live(self, process: str | None = None) -> list[tuple[Hold, str, int]]:
        return [
            m
            for m in self.made
            if m[0].id not in self.dead and (process is None or m[1] == process)
        ]


@pytest.fixture(scope="module", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    url = new_database(request.param, tmp_path_factory.mktemp(f"properties-{request.param}"))
    upgrade(url)
    yield url
    if request.param == "postgres":
        from tests.integration.conftest import _drop_postgres

        asyncio.run(_drop_postgres(url))


async def step(world: World, action: tuple[Any, ...]) -> None:
    model = world.model
    kind = action[0]
    if kind == "grant":
        _, who, amount = action
        await world.procs["A"].credit(
            world.accounts[who],
            amount,
            kind="grant",
            idempotency_key=f"grant:{secrets.token_hex(8)}",
            reference="property test",
        )
        model.balance[who] += amount
    elif kind == "hold":
        _, process, who, pct = action
        amount = model.balance[who] * pct // 100 + pct % 3
        key = world.key if who == 0 else None
        try:
            hold = await world.procs[process].hold(world.accounts[who], key, amount, "r")
        except InsufficientCredit:
            assert model.balance[who] < amount
            return
        except SpendLimitReached:
            assert who == 0 and model.spent + amount > LIMIT
            return
        assert model.balance[who] >= amount and (who == 1 or model.spent + amount <= LIMIT)
        model.balance[who] -= amount
        model.spent += amount if who == 0 else 0
        assert hold.balance_after == model.balance[who]
        model.status[hold.id] = "open"
        world.made.append((hold, process, who))
    elif kind == "settle":
        _, index, pct = action
        live = world.live()
        if not live:
            return
        hold, process, who = live[index % len(live)]
        charge = (hold.amount + pct % 7) * pct // 100
        usage = UsageRow(secrets.token_hex(8), "m", 1, 1, "ok", "stop", 1, None, None)
        got = await world.procs[process].settle(hold, charge, usage)
        assert got == model.settle(hold, who, charge)
        note("settle: " + ("again" if got is None else "late" if got.late else "on time"))
        if got is not None and charge > hold.amount:
            note("settle: above the hold" + (", short" if got.uncollected else ""))
    elif kind == "burst":
        mine = [m for m in world.live("A") if model.status[m[0].id] == "open"]
        charges = [m[0].amount * (i % 4) // 3 for i, m in enumerate(mine)]  # all ≤ the hold
        results = await asyncio.gather(
            *(world.procs["A"].settle(m[0], c, None) for m, c in zip(mine, charges, strict=True))
        )
        for m, c, got in zip(mine, charges, results, strict=True):
            expected = model.settle(m[0], m[2], c)
            assert got is not None and expected is not None and got.charged == expected.charged
    elif kind == "sweep":
        swept = await world.procs["A"].release_stale()
        note(f"sweep: {min(swept, 2)}+ released")
        due = [m for m in world.live("B") if model.status[m[0].id] == "open"]
        assert swept >= len(due)  # (the database is shared with other examples)
        for hold, _, who in due:
            model.release(hold, who)
    elif kind == "crash":
        _, process = action
        old = world.procs[process]
        await old.close()  # the process is gone; its requests never settle
        world.dead |= {m[0].id for m in world.live(process)}
        new = world.procs[process] = world.ledger(process)
        assert new.owner != old.owner and new.instance == old.instance
        released = await new.release_stale(owner=new.instance)  # as `serve` starts
        orphans = [m for m in world.made if m[1] == process and model.status[m[0].id] == "open"]
        assert released == len(orphans)
        for hold, _, who in orphans:
            model.release(hold, who)


async def check(world: World) -> None:
    for who, account in enumerate(world.accounts):
        assert await world.procs["A"].balance(account) == world.model.balance[who]
        assert world.model.balance[who] >= 0
    ids = list(world.model.status)
    query = (
        select(ledger_entries.c.kind, func.count())
        .where(ledger_entries.c.hold_id.in_(ids))
        .group_by(ledger_entries.c.hold_id, ledger_entries.c.kind)
    )
    async with world.engine.connect() as conn:
        per_hold = (await conn.execute(query)).all()
        states = dict(
            (
                await conn.execute(select(holds.c.id, holds.c.status).where(holds.c.id.in_(ids)))
            ).all()
        )
    assert all(count == 1 for _, count in per_hold)  # each kind at most once per hold
    assert states == world.model.status


async def run(url: str, program: list[tuple[Any, ...]]) -> None:
    engine = create_engine(url)
    store = AccountStore(engine)
    try:
        accounts = [
            await store.create_account(f"p-{secrets.token_hex(6)}@example.com", "x", False)
            for _ in range(2)
        ]
        first = Ledger(engine, owner="setup", hold_ttl=LIVE)
        key = (
            await AccountService(store, first).create_key(accounts[0], "k", spend_limit=LIMIT)
        ).id
        world = World(url, engine, accounts, key, {})
        world.procs = {name: world.ledger(name) for name in "AB"}
        for action in program:
            await step(world, action)
            await check(world)
        # The end: every process crashes, its successor releases what is left.
        await step(world, ("crash", "A"))
        await step(world, ("crash", "B"))
        await check(world)
        assert "open" not in world.model.status.values()
        problems = await world.procs["A"].verify()
        mine = [p for p in problems if p.startswith(tuple(f"account {a}:" for a in accounts))]
        assert not [p for p in problems if p.startswith(tuple(f"account {a} (" for a in accounts))]
        assert all("released by a sweeper" in p for p in mine), mine
        assert len(mine) == world.model.late_charges
        for ledger in world.procs.values():
            await ledger.close()
    finally:
        await engine.dispose()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(start=START, program=st.lists(STEP, min_size=8, max_size=40))
def test_random_programs_keep_the_ledger_invariants(
    database: str, start: tuple[tuple[Any, ...], ...], program: list[tuple[Any, ...]]
) -> None:
    asyncio.run(run(database, [*start, *program]))


def test_the_model_agrees_with_a_known_program(database: str) -> None:
    """One fixed program through every branch, so a failure here is easy to read."""
    program: list[tuple[Any, ...]] = [
        ("grant", 0, 5_000),
        ("grant", 1, 3_000),
        ("hold", "A", 0, 20),  # 1,000; captured in part
        ("hold", "B", 1, 66),  # 1,980; swept, then charged late
        ("hold", "A", 1, 50),  # 510; over the hold, short of balance
        ("hold", "A", 1, 101),  # refused: more than the balance
        ("sweep",),
        ("settle", 0, 40),  # 400 of 1,000
        ("settle", 1, 125),  # 2,475 late, after the sweep gave 1,980 back: 2,490 there
        ("settle", 2, 300),  # 1,530 for a hold of 510: 15 left in the balance
        ("settle", 2, 10),  # again: nothing
        ("hold", "A", 0, 20),
        ("burst", 0),
        ("hold", "A", 0, 20),
        ("crash", "A"),
        ("settle", 0, -1),  # a negative charge is none
        ("grant", 0, 1),
    ]
    asyncio.run(run(database, program))

"""Money never depends on an auxiliary write (issue 18, row 6): whatever text a usage row carries
(a client's `user`, an upstream's finish reason: NUL, lone surrogates, huge, any Unicode), the
settlement charges exactly the cost, writes the row, and `verify()` stays clean — on SQLite and
(with TOKENDOCK_TEST_POSTGRES_URL) PostgreSQL, whose text columns refuse NUL and surrogates.

Before, a `\\u0000` in `user` made PostgreSQL refuse the usage row; the settlement's transaction
rolled back with it, and the hold was swept back: the tokens were free."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tests.e2e.server import POSTGRES_URL, new_database
from tests.integration.conftest import BACKENDS, Db
from tests.integration.test_ledger import new_account, new_key
from tokendock.billing import settling
from tokendock.billing.ledger import Ledger, UsageRow
from tokendock.billing.records import INT32_MAX, TEXT_WIDTHS
from tokendock.storage.accounts import AccountStore
from tokendock.storage.db import create_engine
from tokendock.storage.migrate import upgrade
from tokendock.storage.tables import usage_records

START = 1_000_000
HOLD = 10_000
EXAMPLES = 60 if POSTGRES_URL is None else 40  # per backend

NASTY = st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "\ud83d\ude00", "é", "a", "\n"])
TEXT = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.lists(NASTY, max_size=40).map("".join),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=60),
    st.text(min_size=200, max_size=3_000),  # past every column's width
)
REQUIRED = TEXT.map(lambda t: t or "x")  # model and status are NOT NULL columns


def usage_row(request_id: str, texts: dict[str, str | None], **counts: int) -> UsageRow:
    return UsageRow(
        request_id=request_id,
        model=texts["model"] or "m",
        prompt_tokens=counts.get("prompt", 10),
        completion_tokens=counts.get("completion", 5),
        status=texts["status"] or "ok",
        finish_reason=texts["finish_reason"],
        latency_ms=12,
        ttft_ms=3,
        user=texts["user"],
        deployment=texts["deployment"],
        endpoint=texts["endpoint"],
    )


async def row_of(engine: Any, request_id: str) -> Any:
    query = select(usage_records).where(usage_records.c.request_id == request_id)
    async with engine.connect() as conn:
        return (await conn.execute(query)).one()


def storable(text: str | None, width: int) -> None:
    if text is not None:
        assert len(text) <= width and "\x00" not in text
        text.encode("utf-8")


async def settle_once(url: str, texts: dict[str, str | None], charge: int) -> None:
    engine = create_engine(url)
    ledger = Ledger(engine, owner="text", hold_ttl=timedelta(hours=1))
    try:
        store = AccountStore(engine)
        account = await store.create_account(f"t-{secrets.token_hex(6)}@example.com", "x", False)
        granted = await ledger.credit(
            account, START, kind="grant", idempotency_key=f"g{account}", reference="test"
        )
        assert granted
        hold = await ledger.hold(account, None, HOLD, "r")
        request_id = "req_" + secrets.token_hex(8)
        settlement = await ledger.settle(hold, charge, usage_row(request_id, texts))
        assert settlement is not None and settlement.charged == charge
        assert await ledger.balance(account) == START - charge  # charged exactly the cost
        row = await row_of(engine, request_id)  # and the charge has its usage row
        assert row.cost == charge and row.prompt_tokens == 10
        for name, width in TEXT_WIDTHS.items():
            storable(getattr(row, name), width)
        assert not [p for p in await ledger.verify() if p.startswith(f"account {account} ")]
        assert await ledger.open_holds() == 0
    finally:
        await ledger.close()
        await engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    url = new_database(request.param, tmp_path_factory.mktemp(f"text-{request.param}"))
    upgrade(url)
    yield url
    if request.param == "postgres":
        from tests.integration.conftest import _drop_postgres

        asyncio.run(_drop_postgres(url))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    texts=st.fixed_dictionaries(
        {
            "model": REQUIRED,
            "status": REQUIRED,
            "finish_reason": TEXT,
            "user": TEXT,
            "deployment": TEXT,
            "endpoint": TEXT,
        }
    ),
    charge=st.one_of(st.integers(0, HOLD), st.integers(HOLD, 3 * HOLD)),  # within, above hold
)
def test_any_text_in_a_usage_row_is_charged_exactly(
    database: str, texts: dict[str, str | None], charge: int
) -> None:
    asyncio.run(settle_once(database, texts, charge))


async def test_a_nul_user_is_charged_with_the_row(db: Db) -> None:
    """The issue's reproduction: `user` with a NUL (as `metadata.user_id` on /v1/messages)."""
    account = await new_account(db, balance=START)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, HOLD, "r")
    texts: dict[str, str | None] = dict.fromkeys(TEXT_WIDTHS, None)
    settlement = await db.ledger.settle(
        hold, 1_234, usage_row("req_nul", {**texts, "user": "a\x00b"})
    )
    assert settlement is not None and settlement.charged == 1_234
    assert await db.ledger.balance(account) == START - 1_234
    assert (await row_of(db.engine, "req_nul")).user == "ab"
    assert await db.ledger.verify() == []


async def test_a_row_the_database_refuses_is_written_bare_and_charged(
    db: Db, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Should a row get past the cutting and still be refused (here: the cutting switched off,
    and a lone surrogate neither driver can encode), the settlement is made again without the
    row's free text: charged, with its row, and logged."""
    monkeypatch.setattr(settling, "storable", lambda usage: (usage, []))
    account = await new_account(db, balance=START)
    hold = await db.ledger.hold(account, None, HOLD, "r")
    texts = {**dict.fromkeys(TEXT_WIDTHS, None), "user": "\ud800\x00", "endpoint": "responses"}
    with caplog.at_level(logging.ERROR, logger="tokendock.billing.settling"):
        settlement = await db.ledger.settle(hold, 777, usage_row("req_bare", texts))
    assert settlement is not None and settlement.charged == 777
    assert await db.ledger.balance(account) == START - 777
    row = await row_of(db.engine, "req_bare")
    assert (row.cost, row.user, row.endpoint, row.prompt_tokens) == (777, None, None, 10)
    assert any("refused its usage row" in r.getMessage() for r in caplog.records)
    assert await db.ledger.verify() == []
    # Exactly once: the retry did not settle twice.
    assert await db.ledger.settle(hold, 777, usage_row("req_bare", texts)) is None


async def test_counts_past_an_integer_column_are_charged(db: Db) -> None:
    """A count PostgreSQL's INTEGER refuses (SQLSTATE 22003) is clamped in the bare row."""
    account = await new_account(db, balance=START)
    hold = await db.ledger.hold(account, None, HOLD, "r")
    texts: dict[str, str | None] = dict.fromkeys(TEXT_WIDTHS, None)
    usage = usage_row("req_big", texts, prompt=2**31)
    settlement = await db.ledger.settle(hold, 500, usage)
    assert settlement is not None and settlement.charged == 500
    row = await row_of(db.engine, "req_big")
    assert row.prompt_tokens == (2**31 if db.backend == "sqlite" else INT32_MAX)
    assert await db.ledger.balance(account) == START - 500
    assert await db.ledger.verify() == []


async def test_a_settlement_whose_connection_failed_is_made_again(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not left for the sweep: tried once more, charged once."""
    monkeypatch.setattr(settling, "RETRY_PAUSE", 0)
    account = await new_account(db, balance=START)
    hold = await db.ledger.hold(account, None, HOLD, "r")
    fast = db.ledger.fastpath
    real = fast.settle
    calls: list[int] = []

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("the connection was lost")
        return await real(*args, **kwargs)

    monkeypatch.setattr(fast, "settle", flaky)
    texts: dict[str, str | None] = dict.fromkeys(TEXT_WIDTHS, None)
    settlement = await db.ledger.settle(hold, 4_321, usage_row("req_flaky", texts))
    assert settlement is not None and settlement.charged == 4_321 and len(calls) == 2
    assert await db.ledger.balance(account) == START - 4_321
    assert (await row_of(db.engine, "req_flaky")).cost == 4_321
    assert await db.ledger.verify() == []

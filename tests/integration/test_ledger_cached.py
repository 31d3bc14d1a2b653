"""Cached prompt tokens in storage, on SQLite and PostgreSQL: a settlement writes the usage row's
cached_tokens with its charge in one transaction (td_settle V11 / the SQLite statements), the
account's usage views read them back, and an operator's cached input price is kept and billed."""

from __future__ import annotations

from tests.integration.conftest import OWNER, Db
from tests.integration.test_ledger import assert_consistent, new_account, new_key
from tokendock.billing.ledger import Settlement, UsageRow
from tokendock.billing.pricing import Price
from tokendock.catalog import ModelSpec, PriceSpec
from tokendock.inference.registry import ModelRegistry
from tokendock.services.models import ModelDirectory
from tokendock.storage.history import HistoryStore
from tokendock.storage.model_settings import ModelSetting, ModelSettingsStore

MODEL = "gemma-3-270m"
PRICE = Price.parse("2.5", "10", "0.5")  # µc per token: 2.5 prompt, 0.5 cached, 10 completion


def row(request_id: str, prompt: int, completion: int, cached: int) -> UsageRow:
    return UsageRow(
        request_id, MODEL, prompt, completion, "ok", "stop", 12, 3, None, cached_tokens=cached
    )


async def test_a_settlement_records_its_cached_tokens(db: Db) -> None:
    start = 100_000
    account = await new_account(db, balance=start)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, PRICE.worst(400, 16), "req-cached")
    charge = PRICE.cost(400, 10, cached=380)
    # 20 × 2.5 + 380 × 0.5 + 10 × 10 = 50 + 190 + 100 = 340 (1,100 with nothing cached)
    assert (charge, PRICE.cost(400, 10)) == (340, 1_100)
    result = await db.ledger.settle(hold, charge, row("req-cached", 400, 10, 380))
    assert result == Settlement(charged=340, balance=start - 340)
    plain = await db.ledger.hold(account, key, PRICE.worst(400, 16), "req-plain")
    await db.ledger.settle(plain, PRICE.cost(400, 10), row("req-plain", 400, 10, 0))
    got = {r["request_id"]: r for r in await db.store.usage(account, 10)}
    assert (got["req-cached"]["cached_tokens"], got["req-cached"]["cost"]) == (380, 340)
    assert (got["req-plain"]["cached_tokens"], got["req-plain"]["cost"]) == (0, 1_100)
    assert await db.ledger.balance(account) == start - 340 - 1_100
    (line,) = await HistoryStore(db.engine).usage_lines(account)
    assert (line.requests, line.prompt_tokens, line.cached_tokens) == (2, 800, 380)
    assert line.cost == 1_440
    await assert_consistent(db)


async def test_a_late_settlement_records_its_cached_tokens(db: Db) -> None:
    account = await new_account(db, balance=10_000)
    key = await new_key(db, account)
    hold = await db.ledger.hold(account, key, 1_000, "req-late")
    assert await db.ledger.release_stale(owner=OWNER) == 1  # swept: the request still runs
    result = await db.ledger.settle(hold, 300, row("req-late", 100, 5, 60))
    assert result is not None and result.charged == 300
    (usage,) = await db.store.usage(account, 10)
    assert (usage["cached_tokens"], usage["cost"]) == (60, 300)


async def test_an_operator_cached_price_is_kept_and_billed(db: Db) -> None:
    spec = ModelSpec(
        id=MODEL,
        package="never-loaded",
        context_length=4096,
        max_output_tokens=256,
        price=PriceSpec(input="2.5", output="10", cached_input="1"),
    )
    directory = ModelDirectory(ModelRegistry({MODEL: spec}, {}), ModelSettingsStore(db.engine))
    await directory.refresh()
    assert directory.price(MODEL) == Price(2_500_000, 10_000_000, 1_000_000)  # the catalog's
    await directory.save(MODEL, ModelSetting(True, "3", "12", "0.25"))
    assert directory.price(MODEL) == Price(3_000_000, 12_000_000, 250_000)
    assert directory.price(MODEL).cost(100, 0, cached=100) == 25
    await directory.save(MODEL, ModelSetting(True, "3", "12"))  # no cached price: the input's
    assert directory.price(MODEL).cached_per_million is None
    assert directory.price(MODEL).cost(100, 0, cached=100) == 300

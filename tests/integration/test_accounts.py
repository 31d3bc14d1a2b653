"""API-key authentication against a real database (services/accounts.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.integration.conftest import Db
from tokendock.errors import InvalidAPIKey, InvalidRequest, NotFound, Unauthorized
from tokendock.services.accounts import AccountService
from tokendock.storage.accounts import KeyRow


def uncached(db: Db) -> AccountService:
    """cache_seconds=0: every authenticate() reads the database, so tests are deterministic."""
    return AccountService(db.store, db.ledger, cache_seconds=0)


async def account(db: Db) -> int:
    return await db.store.create_account("owner@example.com", "not-a-hash", False)


@pytest.mark.parametrize("header", [None, ""])
async def test_missing_header_is_unauthorized_without_a_code(db: Db, header: str | None) -> None:
    with pytest.raises(Unauthorized) as info:
        await uncached(db).authenticate(header)
    assert type(info.value) is Unauthorized
    assert info.value.code is None
    assert info.value.status == 401
    assert "didn't provide an API key" in info.value.message


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "td-abc"])
async def test_malformed_header_is_unauthorized_without_a_code(db: Db, header: str) -> None:
    with pytest.raises(Unauthorized) as info:
        await uncached(db).authenticate(header)
    assert type(info.value) is Unauthorized
    assert info.value.code is None


async def test_unknown_key_is_invalid_api_key(db: Db) -> None:
    secret = "td-" + "Q" * 20 + "SECRETMIDDLE" + "Q" * 12 + "zz99"
    with pytest.raises(InvalidAPIKey) as info:
        await uncached(db).authenticate(f"Bearer {secret}")
    assert info.value.code == "invalid_api_key"
    assert info.value.status == 401
    assert "SECRETMIDDLE" not in info.value.message
    assert "zz99" in info.value.message  # the redacted form helps the user spot the key


async def test_valid_key_authenticates(db: Db) -> None:
    owner = await account(db)
    svc = uncached(db)
    new = await svc.create_key(owner, "ci", spend_limit=5_000, models=["gemma-3-270m"])
    key = await svc.authenticate(f"Bearer {new.secret}")
    assert isinstance(key, KeyRow)
    assert (key.id, key.account_id, key.name) == (new.id, owner, "ci")
    assert (key.spend_limit, key.spent, key.allowed_models) == (5_000, 0, ("gemma-3-270m",))
    # the scheme is case-insensitive and surrounding whitespace is tolerated
    assert (await svc.authenticate(f"bearer   {new.secret}  ")).id == new.id


async def test_revoked_key_is_refused_once_the_cache_expires(db: Db) -> None:
    owner = await account(db)
    svc = uncached(db)
    new = await svc.create_key(owner, "k")
    assert (await svc.authenticate(f"Bearer {new.secret}")).id == new.id
    # Revoked through the store, as another TokenDock process would: this service's cache is
    # not cleared, so only cache expiry (immediate at cache_seconds=0) makes it notice.
    assert await db.store.revoke_key(owner, new.id)
    with pytest.raises(InvalidAPIKey):
        await svc.authenticate(f"Bearer {new.secret}")


async def test_revoking_through_the_service_takes_effect_at_once_despite_the_cache(db: Db) -> None:
    owner = await account(db)
    svc = AccountService(db.store, db.ledger, cache_seconds=3600)
    new = await svc.create_key(owner, "k")
    await svc.authenticate(f"Bearer {new.secret}")  # now cached for an hour
    await svc.revoke_key(owner, new.id)
    with pytest.raises(InvalidAPIKey):
        await svc.authenticate(f"Bearer {new.secret}")


async def test_revoking_someone_elses_key_is_not_found(db: Db) -> None:
    owner = await account(db)
    intruder = await db.store.create_account("intruder@example.com", "not-a-hash", False)
    svc = uncached(db)
    new = await svc.create_key(owner, "k")
    with pytest.raises(NotFound, match="No live API key"):
        await svc.revoke_key(intruder, new.id)
    assert (await svc.authenticate(f"Bearer {new.secret}")).id == new.id


@pytest.mark.parametrize(
    "zone",
    [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))],
    ids=["utc", "utc-5", "utc+5:30"],
)
async def test_expired_key_is_invalid_api_key(db: Db, zone: timezone) -> None:
    owner = await account(db)
    svc = uncached(db)
    expired_at = datetime.now(zone) - timedelta(minutes=1)
    new = await svc.create_key(owner, "old", expires_at=expired_at)
    stored = (await db.store.list_keys(owner))[0].expires_at
    assert stored is not None
    try:
        key = await svc.authenticate(f"Bearer {new.secret}")
    except InvalidAPIKey as exc:
        error = exc
    else:
        pytest.fail(
            f"BUG ({db.backend}): key with expires_at={expired_at.isoformat()} (1 minute ago) "
            f"was accepted (key {key.id}); it reads back as {stored.isoformat()}, "
            f"{stored - expired_at} later. On SQLite an aware datetime is stored as its naive "
            "wall-clock time (the offset is dropped) and storage/accounts.py utc() re-labels "
            "it as UTC, so any non-UTC offset shifts the expiry by that offset."
        )
    assert "expired" in error.message
    assert error.code == "invalid_api_key"


async def test_key_expiring_in_the_future_works(db: Db) -> None:
    owner = await account(db)
    svc = uncached(db)
    new = await svc.create_key(owner, "new", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert (await svc.authenticate(f"Bearer {new.secret}")).id == new.id


async def test_key_of_a_disabled_account_is_invalid(db: Db) -> None:
    owner = await account(db)
    svc = uncached(db)
    new = await svc.create_key(owner, "k")
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET disabled = true WHERE id = :id"), {"id": owner}
        )
    with pytest.raises(InvalidAPIKey):
        await svc.authenticate(f"Bearer {new.secret}")


async def test_create_account_normalises_email_and_refuses_duplicates(db: Db) -> None:
    svc = uncached(db)
    account_id = await svc.create_account("  Alice@Example.COM ", "pw", grant=2_500_000)
    assert await svc.account_id("alice@example.com") == account_id
    assert await db.ledger.balance(account_id) == 2_500_000
    with pytest.raises(InvalidRequest, match="already exists"):
        await svc.create_account("alice@example.com", "pw")
    with pytest.raises(InvalidRequest, match="not an email"):
        await svc.create_account("alice", "pw")
    assert await db.ledger.verify() == []


async def test_stored_strings_are_bounded_identically_on_every_database(db: Db) -> None:
    """A key's name is refused past its column's width; a grant's free-text reference is cut
    to its column's, so a long note never fails the write (PostgreSQL enforces VARCHAR(n))."""
    service = uncached(db)
    owner = await account(db)
    with pytest.raises(InvalidRequest) as info:
        await service.create_key(owner, "n" * 201)
    assert info.value.param == "name"
    await service.create_key(owner, "n" * 200)
    assert await db.ledger.credit(
        owner, 5, kind="grant", idempotency_key="long-note", reference="r" * 5000
    )
    async with db.engine.connect() as conn:
        stored = (await conn.execute(text("SELECT reference FROM ledger_entries"))).scalar_one()
    assert stored == "r" * 400

"""The ledger's SQL has one source: the frozen PostgreSQL function texts never change (a change
is a new version and a new migration), the migrations install exactly those texts, and the
SQLite statements prepare against the migrated schema."""

from __future__ import annotations

import hashlib
import importlib
import re
import sqlite3
from pathlib import Path

from tokendock.storage import ledger_plpgsql, ledger_sql
from tokendock.storage.migrate import upgrade

# sha256 of each frozen text, first 16 hex digits. A migration that already ran must still
# create exactly what it created: if one of these fails, add a new version instead.
FROZEN = {
    "TD_HOLD": "a4d83569820c2e7c",
    "TD_SETTLE_V3": "7d26d9dd5e8b62fb",
    "TD_SETTLE_V4": "0f544be00b08907e",
    "TD_SETTLE_V7": "b2d5f703fca21b81",
    "TD_SETTLE_V8": "a300ce4d77ec5115",
    "TD_SETTLE_V10": "8e235347b00bddd8",
    "TD_SETTLE_V11": "f13c3a58e40d5106",
}


def migration(name: str) -> object:
    return importlib.import_module(f"tokendock.storage.migrations.versions.{name}")


def test_frozen_function_texts_never_change() -> None:
    for name, digest in FROZEN.items():
        text: str = getattr(ledger_plpgsql, name)
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest, name


def test_each_migration_installs_its_own_frozen_version() -> None:
    v3 = migration("0003_ledger_functions")
    v4 = migration("0004_usage_deployment")
    v7 = migration("0007_settle_over_hold")
    v10 = migration("0010_usage_endpoint_stored_chat")
    v11 = migration("0011_usage_cached_tokens")
    assert (v3.TD_HOLD, v3.TD_SETTLE) == (ledger_plpgsql.TD_HOLD, ledger_plpgsql.TD_SETTLE_V3)  # type: ignore[attr-defined]
    assert v4.TD_SETTLE is ledger_plpgsql.TD_SETTLE_V4  # type: ignore[attr-defined]
    assert v7.TD_SETTLE is ledger_plpgsql.TD_SETTLE_V7  # type: ignore[attr-defined]
    assert v10.TD_SETTLE is ledger_plpgsql.TD_SETTLE_V10  # type: ignore[attr-defined]
    assert v11.TD_SETTLE is ledger_plpgsql.TD_SETTLE_V11  # type: ignore[attr-defined]
    assert ledger_sql.TD_SETTLE is ledger_plpgsql.TD_SETTLE_V11  # what 0011 installs
    for source in Path(ledger_plpgsql.__file__).parent.glob("migrations/versions/*.py"):
        assert ".replace(" not in source.read_text(), source.name


def test_sqlite_statements_prepare_against_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    conn = sqlite3.connect(path)
    try:
        for name in dir(ledger_sql):
            text = getattr(ledger_sql, name)
            if name.isupper() and not name.startswith(("PG_", "TD_", "_")):
                assert isinstance(text, str)
                numbered = [int(n) for n in re.findall(r"\?(\d+)", text)]
                count = max(numbered) if numbered else text.count("?")
                conn.execute("EXPLAIN " + text, (None,) * count)
    finally:
        conn.close()

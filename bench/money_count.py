"""What one request sends to the database in bench/money.py: SQL statements, COMMITs and
aiosqlite thread round trips through SQLAlchemy, and calls into the ledger's fast path (with
the SQLite writer's own statements), per phase (admission, settlement)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.money_load import MAX_TOKENS, MODEL, PRICE, PROMPT_TOKENS, Backend
from tokendock.billing.fastpath_sqlite import SqliteWriter
from tokendock.billing.ledger import Ledger, UsageRow

STATEMENT_SAMPLE = 50  # sequential requests for the statements-per-request count


@contextlib.contextmanager
def counting(
    engine: AsyncEngine, ledger: Ledger, counts: Counter[str], phase: list[str]
) -> Iterator[None]:
    """Count SQL statements, COMMITs and (SQLite) aiosqlite thread round trips through
    SQLAlchemy, and calls into the ledger's fast path, per phase."""

    def on_execute(*_args: Any) -> None:
        counts[phase[0] + ":statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts[phase[0] + ":commits"] += 1

    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", on_execute)
    event.listen(sync, "commit", on_commit)
    patched: tuple[Any, Any] | None = None
    if engine.dialect.name == "sqlite":
        import aiosqlite.core

        original: Any = aiosqlite.core.Connection._execute

        async def hop(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            counts[phase[0] + ":thread_hops"] += 1
            return await original(self, fn, *args, **kwargs)

        aiosqlite.core.Connection._execute = hop  # type: ignore[method-assign]  # counting
        patched = (aiosqlite.core.Connection, original)
    fast: Any = ledger.fastpath
    originals = {name: getattr(fast, name) for name in ("hold", "settle")}

    def counted(name: str) -> Any:
        async def call(*args: Any) -> Any:
            counts[phase[0] + ":fastpath_calls"] += 1
            return await originals[name](*args)

        return call

    for name in originals:
        setattr(fast, name, counted(name))

    def on_sqlite(statement: str) -> None:  # what the SQLite writer's connection runs
        counts[phase[0] + ":fastpath_sql"] += 1
        if statement.startswith("COMMIT"):
            counts[phase[0] + ":fastpath_commits"] += 1

    traced = isinstance(fast, SqliteWriter) and fast.trace(on_sqlite)
    try:
        yield
    finally:
        if traced:
            fast.trace(None)
        for name in originals:
            delattr(fast, name)
        event.remove(sync, "before_cursor_execute", on_execute)
        event.remove(sync, "commit", on_commit)
        if patched is not None:
            patched[0]._execute = patched[1]


async def statements_per_request(b: Backend) -> dict[str, float]:
    """Sequential requests with a warm key cache: what one admission and one settlement send."""
    worst = PRICE.cost(PROMPT_TOKENS, MAX_TOKENS)
    header = "Bearer " + b.secrets[0]
    await b.service.authenticate(header)  # warm the cache: the steady state
    counts: Counter[str] = Counter()
    phase = ["admission"]
    with counting(b.engine, b.ledger, counts, phase):
        for n in range(STATEMENT_SAMPLE):
            phase[0] = "admission"
            key = await b.service.authenticate(header)
            hold = await b.ledger.hold(key.account_id, key.id, worst, f"stmt-{n}")
            phase[0] = "settlement"
            actual = PRICE.cost(PROMPT_TOKENS, 100)
            usage = UsageRow(f"stmt-{n}", MODEL, PROMPT_TOKENS, 100, "ok", "stop", 1, None, None)
            settled = await b.ledger.settle(hold, actual, usage)
            assert settled is not None
            b.completed += 1
            b.charged += settled.charged
    return {k: v / STATEMENT_SAMPLE for k, v in sorted(counts.items())}


def statements_text(counts: dict[str, float]) -> str:
    parts = []
    for phase in ("admission", "settlement"):
        text = (
            f"{phase} {counts.get(phase + ':statements', 0):g} statements + "
            f"{counts.get(phase + ':commits', 0):g} COMMIT"
        )
        if phase + ":thread_hops" in counts:
            text += f", {counts[phase + ':thread_hops']:g} aiosqlite thread round trips"
        text += f" through SQLAlchemy, {counts.get(phase + ':fastpath_calls', 0):g} fast-path call"
        if phase + ":fastpath_sql" in counts:
            text += (
                f" ({counts[phase + ':fastpath_sql']:g} SQLite statements with BEGIN and "
                f"{counts.get(phase + ':fastpath_commits', 0):g} COMMIT)"
            )
        parts.append(text)
    return "; ".join(parts)

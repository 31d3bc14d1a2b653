"""The load signal the ledger is handed: is the process calm enough to run a SQLite ledger
transaction inline on the event loop (lowest latency), or should the writer thread take it
(under load the other core does the SQLite work)? See billing/fastpath_sqlite.py."""

from __future__ import annotations

from typing import Protocol


class Load(Protocol):
    def quiet(self) -> bool:
        """True while few requests are in flight."""
        ...


class Gauge(Protocol):
    """Something counting the requests in flight (observability.Metrics: the middleware's
    count of requests being served)."""

    active: int


class FewInFlight:
    """Quiet while at most `limit` requests are in flight, as `gauge.active` counts them."""

    __slots__ = ("_gauge", "limit")

    def __init__(self, gauge: Gauge, limit: int):
        self._gauge = gauge
        self.limit = limit

    def quiet(self) -> bool:
        return self._gauge.active <= self.limit


class InFlight:
    """A counter of requests in flight of its own, for callers without a middleware (the money
    benchmark): `active` goes up and down around each request."""

    __slots__ = ("active",)

    def __init__(self) -> None:
        self.active = 0

"""The HTTP client every upstream deployment is reached through: one aiohttp session, so one
connection pool with keep-alive for all of them.

Wiring: the composition root (ModelRegistry.from_catalog) makes ONE transport before the routers
and hands it to each Router's constructor and to the UpstreamPool, which opens it at start-up and
closes it at shutdown. aiohttp binds a session to the running event loop, so a transport made
before the loop runs opens its session in `start()`; a test hands in a session of its own (e.g.
one pointed at an in-process aiohttp test server) and keeps owning it: `close()` leaves a
borrowed session open.
"""

from __future__ import annotations

import aiohttp


def new_session() -> aiohttp.ClientSession:
    """The production session: unbounded pool (the routers bound concurrency per deployment),
    idle connections kept 60 s (longer than any gap between requests under load), DNS cached."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
    )
    return aiohttp.ClientSession(
        connector=connector,
        read_bufsize=1 << 20,  # one SSE line may carry a large tool call
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


class UpstreamTransport:
    def __init__(self, session: aiohttp.ClientSession | None = None):
        self._session = session
        self._owned = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the upstream transport was not started (UpstreamPool.start)")
        return self._session

    async def start(self) -> None:
        """Open the session on the running loop (a no-op for a session handed in)."""
        if self._session is None:
            self._session = new_session()

    async def close(self) -> None:
        """Close the session this transport opened; a borrowed one stays its owner's."""
        if self._owned and self._session is not None:
            session, self._session = self._session, None
            await session.close()

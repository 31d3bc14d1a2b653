"""The upstream side of the process: one shared aiohttp session and the routers that use it.

One session means one connection pool with keep-alive for every upstream; it is created on the
running loop at start-up and closed at shutdown, with the active health probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from tokendock.inference.router import Router

log = logging.getLogger(__name__)


class UpstreamPool:
    def __init__(self, routers: dict[str, Router]):
        self.routers = routers
        self._session: aiohttp.ClientSession | None = None
        self._probing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.routers:
            return
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            read_bufsize=1 << 20,  # one SSE line may carry a large tool call
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        for router in self.routers.values():
            router.session = self._session
        every = min(r.policy.probe_every for r in self.routers.values())
        if every > 0:
            self._probing = asyncio.create_task(self._probe_forever(every))

    async def _probe_forever(self, every: float) -> None:
        while True:
            results = await asyncio.gather(
                *(r.probe() for r in self.routers.values()), return_exceptions=True
            )
            for result in results:
                if isinstance(result, Exception):
                    log.error("upstream probe failed: %s", result)
            await asyncio.sleep(every)

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        if self._session is not None:
            await self._session.close()

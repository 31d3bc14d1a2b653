"""The upstream side of the process: the routers and the one transport (HTTP session) they
share, opened on the running loop at start-up and closed at shutdown, with the active health
probes. The transport is made before the routers and handed to each
(inference/upstream/transport.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tokendock.inference.upstream.router import Router
from tokendock.inference.upstream.transport import UpstreamTransport

log = logging.getLogger(__name__)


class UpstreamPool:
    def __init__(self, routers: dict[str, Router], transport: UpstreamTransport | None = None):
        self.routers = routers
        shared = next((r.transport for r in routers.values()), None)
        self.transport = transport or shared or UpstreamTransport()
        for router in routers.values():
            if router.transport is not self.transport:
                raise ValueError(f"router {router.model_id!r} uses another transport")
        self._probing: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.routers:
            return
        await self.transport.start()
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
        await self.transport.close()

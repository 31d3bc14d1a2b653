"""Public model ids → engines (embedded llama.cpp) or routers (upstream deployments), built once
from the catalog by the composition root."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

from tokendock.catalog import Catalog, ModelSpec
from tokendock.errors import ModelNotFound
from tokendock.inference.base import Engine
from tokendock.inference.llama import LlamaEngine
from tokendock.inference.pool import UpstreamPool
from tokendock.inference.router import RetryPolicy, Router
from tokendock.inference.transport import UpstreamTransport
from tokendock.inference.upstream import Deployment

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(
        self,
        engines: dict[str, Engine],
        specs: dict[str, ModelSpec],
        upstreams: UpstreamPool | None = None,
    ):
        self._engines = engines
        self._specs = specs
        self.upstreams = upstreams or UpstreamPool({})

    @classmethod
    def from_catalog(
        cls,
        catalog: Catalog,
        data_dir: Path,
        policy: RetryPolicy | None = None,
        transport: UpstreamTransport | None = None,
    ) -> ModelRegistry:
        """`transport`: the upstreams' HTTP client (a test may hand in its own session)."""
        transport = transport or UpstreamTransport()
        engines: dict[str, Engine] = {}
        routers: dict[str, Router] = {}
        specs: dict[str, ModelSpec] = {}
        for spec in catalog:
            specs[spec.id] = spec
            if spec.engine == "upstream":
                deployments = [Deployment.from_spec(d) for d in spec.deployments]
                routers[spec.id] = Router(spec.id, deployments, policy or RetryPolicy(), transport)
            else:
                engines[spec.id] = LlamaEngine(spec, data_dir)
        return cls(engines, specs, UpstreamPool(routers, transport))

    def router(self, model_id: str) -> Router | None:
        """The router of an upstream-served model; None for the embedded engine's models."""
        return self.upstreams.routers.get(model_id)

    def engine(self, model_id: str) -> Engine:
        engine = self._engines.get(model_id)
        if engine is None:
            raise ModelNotFound(model_id)
        return engine

    def spec(self, model_id: str) -> ModelSpec:
        spec = self._specs.get(model_id)
        if spec is None:
            raise ModelNotFound(model_id)
        return spec

    def specs(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def engines(self) -> Iterator[Engine]:
        """The embedded engines (not the upstream routers)."""
        return iter(self._engines.values())

    @property
    def ready(self) -> bool:
        """Every embedded model is loaded. Upstream health is not this process's readiness: a
        replica stays in its load balancer while an upstream is down (it answers 503s)."""
        return all(e.ready for e in self._engines.values())

    async def start(self) -> None:
        """Load every model; a model that fails to load is logged and stays not ready."""
        await self.upstreams.start()
        results = await asyncio.gather(
            *(e.start() for e in self._engines.values()), return_exceptions=True
        )
        for engine, result in zip(self._engines.values(), results, strict=True):
            if isinstance(result, BaseException):
                log.error("model %s failed to load: %s", engine.model_id, result)
            else:
                log.info("model %s ready", engine.model_id)

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self._engines.values()))
        await self.upstreams.close()

"""Public model ids → backends (inference/backend.py): the embedded llama.cpp engine, a router
over upstream deployments, or both (spill-over: inference/spill.py; embedding models:
inference/embeddings/backend.py) — built once from the catalog by the composition root, or
handed in whole (tests pass their own backends)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

from tokendock.catalog import MEDIA_TASKS, Catalog, ModelSpec
from tokendock.errors import ModelNotFound
from tokendock.inference.backend import Backend
from tokendock.inference.embeddings.backend import EmbeddingBackend
from tokendock.inference.embeddings.embedder import LlamaEmbedder
from tokendock.inference.engine.base import Engine
from tokendock.inference.engine.embedded import EmbeddedBackend
from tokendock.inference.engine.llama import LlamaEngine
from tokendock.inference.spill import SpillBackend
from tokendock.inference.upstream.backend import UpstreamBackend
from tokendock.inference.upstream.client import Deployment
from tokendock.inference.upstream.embeddings import UpstreamEmbeddingBackend
from tokendock.inference.upstream.passthrough import PassThroughBackend
from tokendock.inference.upstream.pool import UpstreamPool
from tokendock.inference.upstream.router import RetryPolicy, Router
from tokendock.inference.upstream.transport import UpstreamTransport

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        backends: dict[str, Backend],
        upstreams: UpstreamPool | None = None,
    ):
        self._specs = specs
        self._backends = backends
        self.upstreams = upstreams or UpstreamPool({})
        self._engines = {m: e for m, b in backends.items() if (e := _engine(b)) is not None}

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
        backends: dict[str, Backend] = {}
        routers: dict[str, Router] = {}
        specs: dict[str, ModelSpec] = {}
        for spec in catalog:
            specs[spec.id] = spec
            if spec.deployments:  # engine = "upstream", or spill-over (spill_after)
                deployments = [Deployment.from_spec(d) for d in spec.deployments]
                router = Router(spec.id, deployments, policy or RetryPolicy(), transport)
                routers[spec.id] = router
            if spec.engine == "upstream":
                router = routers[spec.id]
                if spec.task in MEDIA_TASKS:
                    backends[spec.id] = PassThroughBackend(router, spec)
                elif spec.task == "embedding":
                    backends[spec.id] = UpstreamEmbeddingBackend(router, spec)
                else:
                    backends[spec.id] = UpstreamBackend(router, spec)
            elif spec.task == "embedding":
                backends[spec.id] = EmbeddingBackend(LlamaEmbedder(spec, data_dir), spec)
            elif spec.spill_after is not None:
                engine = LlamaEngine(spec, data_dir)
                local = EmbeddedBackend(engine, spec)
                remote = UpstreamBackend(routers[spec.id], spec)
                backends[spec.id] = SpillBackend(local, remote, engine)
            else:
                backends[spec.id] = EmbeddedBackend(LlamaEngine(spec, data_dir), spec)
        return cls(specs, backends, UpstreamPool(routers, transport))

    def backend(self, model_id: str) -> Backend:
        backend = self._backends.get(model_id)
        if backend is None:
            raise ModelNotFound(model_id)
        return backend

    def router(self, model_id: str) -> Router | None:
        """The router of a model with deployments (upstream-served, or spilling over to them);
        None for the embedded engine's other models."""
        return self.upstreams.routers.get(model_id)

    def spec(self, model_id: str) -> ModelSpec:
        spec = self._specs.get(model_id)
        if spec is None:
            raise ModelNotFound(model_id)
        return spec

    def specs_by_id(self) -> Mapping[str, ModelSpec]:
        return self._specs

    def specs(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def engines(self) -> Iterator[Engine]:
        """The embedded engines (not the upstream routers)."""
        return iter(self._engines.values())

    @property
    def ready(self) -> bool:
        """Every embedded model is loaded. Upstream health is not this process's readiness: a
        replica stays in its load balancer while an upstream is down (it answers 503s)."""
        return all(b.ready for b in self._backends.values())

    async def start(self) -> None:
        """Load every model; a model that fails to load is logged and stays not ready."""
        await self.upstreams.start()
        backends = self._backends
        results = await asyncio.gather(
            *(b.open() for b in backends.values()), return_exceptions=True
        )
        for model, result in zip(backends, results, strict=True):
            if isinstance(result, BaseException):
                log.error("model %s failed to load: %s", model, result)
            else:
                log.info("model %s ready", model)

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._backends.values()))
        await self.upstreams.close()


def _engine(backend: Backend) -> Engine | None:
    """The embedded engine behind a backend, if it has one."""
    if isinstance(backend, SpillBackend):
        return backend.embedded.engine
    if isinstance(backend, EmbeddedBackend):
        return backend.engine
    return None

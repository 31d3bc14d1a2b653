"""Public model ids → engines, built once from the catalog by the composition root."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

from tokendock.catalog import Catalog, ModelSpec
from tokendock.errors import ModelNotFound
from tokendock.inference.base import Engine
from tokendock.inference.llama import LlamaEngine

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, engines: dict[str, Engine], specs: dict[str, ModelSpec]):
        self._engines = engines
        self._specs = specs

    @classmethod
    def from_catalog(cls, catalog: Catalog, data_dir: Path) -> ModelRegistry:
        engines: dict[str, Engine] = {}
        specs: dict[str, ModelSpec] = {}
        for spec in catalog:
            engines[spec.id] = LlamaEngine(spec, data_dir)
            specs[spec.id] = spec
        return cls(engines, specs)

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

    @property
    def ready(self) -> bool:
        return all(e.ready for e in self._engines.values())

    async def start(self) -> None:
        """Load every model; a model that fails to load is logged and stays not ready."""
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

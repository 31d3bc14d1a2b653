"""create_app(settings): the only place objects are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from tokendock import __version__
from tokendock.catalog import Catalog
from tokendock.config import Settings
from tokendock.inference.registry import ModelRegistry
from tokendock.services.completions import CompletionService
from tokendock.web import errors
from tokendock.web.api import chat, completions, health, models
from tokendock.web.deps import Services
from tokendock.web.middleware import RequestContextMiddleware

log = logging.getLogger("tokendock")


def create_app(settings: Settings) -> FastAPI:
    catalog = Catalog.load(settings.models_file)
    registry = ModelRegistry.from_catalog(catalog, settings.data_dir)
    services = Services(settings=settings, models=registry, completions=CompletionService(registry))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Models load in the background: /health answers at once, /ready once they are loaded.
        loading = asyncio.create_task(_load(registry, settings))
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await registry.close()

    app = FastAPI(
        title="TokenDock",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    errors.install(app)
    for router in (health.router, models.router, chat.router, completions.router):
        app.include_router(router)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


async def _load(registry: ModelRegistry, settings: Settings) -> None:
    await registry.start()
    base = settings.base_url or f"http://{settings.host}:{settings.port}"
    for spec in registry.specs():
        engine = registry.engine(spec.id)
        state = "ready" if engine.ready else "FAILED to load"
        log.info("model %s: %s (llama.cpp, context %d tokens)", spec.id, state, spec.context_length)
    log.info(
        "TokenDock %s serving %s at %s/v1",
        __version__,
        ", ".join(s.id for s in registry.specs()),
        base,
    )

"""create_app(settings): the only place objects are wired together."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from tokendock import __version__
from tokendock.billing.ledger import Ledger
from tokendock.billing.load import FewInFlight
from tokendock.catalog import Catalog
from tokendock.config import Settings
from tokendock.inference.registry import ModelRegistry
from tokendock.inference.spill import SpillBackend
from tokendock.inference.upstream.router import RetryPolicy
from tokendock.limits.base import Limiter, Limits
from tokendock.limits.memory import MemoryLimiter
from tokendock.observability import Metrics, configure_logging
from tokendock.services.access import AccessWatch
from tokendock.services.accounts import AccountService
from tokendock.services.batch_output import Finalizer
from tokendock.services.batch_runner import BatchRunner
from tokendock.services.batches import Batches
from tokendock.services.compaction import Seal
from tokendock.services.conversations import Conversations
from tokendock.services.counting import Counter
from tokendock.services.files import Files
from tokendock.services.gate import Gate
from tokendock.services.idempotency import Idempotency
from tokendock.services.models import ModelDirectory
from tokendock.services.pipeline import Pipeline
from tokendock.services.responses import Responses
from tokendock.services.running import Running
from tokendock.services.storage import StorageQuota
from tokendock.services.stored_chat import StoredChats
from tokendock.services.uploads import Uploads
from tokendock.storage.access import AccessEventStore
from tokendock.storage.accounts import AccountStore
from tokendock.storage.admin import AdminStore
from tokendock.storage.batches import BatchStore
from tokendock.storage.conversations import ConversationStore
from tokendock.storage.db import create_engine
from tokendock.storage.files import FileStore
from tokendock.storage.history import HistoryStore
from tokendock.storage.idempotency import IdempotencyStore
from tokendock.storage.model_settings import ModelSettingsStore
from tokendock.storage.quota import StorageUsage
from tokendock.storage.responses import ResponseStore
from tokendock.storage.stored_chat import StoredChatStore
from tokendock.storage.uploads import UploadStore
from tokendock.web import errors
from tokendock.web.api import (
    account,
    chat,
    completions,
    embeddings,
    health,
    media,
    media_forms,
    messages,
    models,
)
from tokendock.web.api import batches as batches_api
from tokendock.web.api import conversations as conversations_api
from tokendock.web.api import files as files_api
from tokendock.web.api import message_batches as message_batches_api
from tokendock.web.api import metrics as metrics_api
from tokendock.web.api import responses as responses_api
from tokendock.web.api.batch_lines import adapters
from tokendock.web.api.stored_chat import router as stored_chat_router
from tokendock.web.api.uploads import router as uploads_router
from tokendock.web.dashboard import admin, pages, playground, reference, usage
from tokendock.web.dashboard.session import Sessions, load_secret
from tokendock.web.deps import Services
from tokendock.web.front import FrontedFastAPI
from tokendock.web.hot import HotRoutes
from tokendock.web.middleware import RequestContextMiddleware
from tokendock.web.openapi import openapi_route
from tokendock.web.shutdown import Shutdown, ShutdownMiddleware

log = logging.getLogger("tokendock")
FILE_SWEEP_SECONDS = 300.0

# At most this many requests in flight: the ledger runs SQLite inline on the loop (lowest
# latency); above it, on its writer thread (the other core does the SQLite work).
QUIET_REQUESTS = 4
MODEL_SETTINGS_SECONDS = 5.0  # how soon a replica follows the admin page's model changes
STATIC = Path(__file__).parent / "web" / "dashboard" / "static"


def create_app(settings: Settings, registry: ModelRegistry | None = None) -> FastAPI:
    """`registry`: the models and their backends; by default built from the catalog file
    (tests hand in their own backends)."""
    metrics = Metrics()
    if registry is None:
        catalog = Catalog.load(settings.models_file)
        registry = ModelRegistry.from_catalog(catalog, settings.data_dir, retry_policy(settings))
    _observe(registry, metrics)
    db = create_engine(settings.database_url_or_default())
    ledger = Ledger(
        db,
        owner=settings.instance_name(),
        hold_ttl=timedelta(seconds=settings.hold_ttl_seconds),
        load=FewInFlight(metrics, QUIET_REQUESTS),  # metrics.active: the middleware's count
    )
    limiter = build_limiter(settings)
    tiers = {name: Limits(**values) for name, values in settings.rate_tiers.items()}
    directory = ModelDirectory(registry, ModelSettingsStore(db))
    gate = Gate(directory, ledger, limiter, tiers, batch_share=settings.batch_rate_share)
    running = Running()  # this process's calls by account and key, ended when access ends
    pipeline = Pipeline(registry, gate, Idempotency(IdempotencyStore(db)), running)
    accounts = AccountService(
        AccountStore(db),
        ledger,
        cache_seconds=settings.key_cache_seconds,
        changed=lambda: access.wake(),  # a change made here is applied here at once
    )
    access = AccessWatch(AccessEventStore(db), running, accounts.forget_keys)
    storage_quota = StorageQuota(StorageUsage(db), settings.storage_quota_bytes)
    stored_chats = StoredChats(StoredChatStore(db), storage_quota)
    file_store = FileStore(db)  # files and uploads: bytes in the database, for every replica
    upload_store = UploadStore(db, file_store)
    files = Files(file_store, upload_store, storage_quota, max_bytes=settings.file_max_bytes)
    services = Services(
        settings=settings,
        models=registry,
        pipeline=pipeline,
        accounts=accounts,
        metrics=metrics,
        limiter=limiter,
        history=HistoryStore(db),
        admin=AdminStore(db),
        directory=directory,
        stored_chats=stored_chats,
        counter=Counter(registry, gate),
        files=files,
    )
    conversation_store = ConversationStore(db)  # the Conversations API's, and responses'
    responses = Responses(ResponseStore(db), storage_quota, conversations=conversation_store)
    batch_store = BatchStore(db)
    runner = BatchRunner(
        batch_store,
        pipeline,
        adapters(responses, registry),
        accounts.store.key_by_id,
        Finalizer(batch_store, files),
        owner=ledger.owner,
        concurrency=settings.batch_concurrency,
        lease_seconds=settings.batch_lease_seconds,
        max_lines=settings.batch_max_lines,
        max_line_bytes=settings.max_body_bytes,
        storage_limit=storage_quota.limit,
    )
    batches = Batches(
        batch_store,
        files,
        window_seconds=settings.batch_window_seconds,
        max_lines=settings.batch_max_lines,
        runner=runner if settings.batch_runner else None,
        storage_limit=storage_quota.limit,
    )
    shutdown = Shutdown(settings.shutdown_grace_seconds)
    lifetime = _Lifetime(
        settings=settings,
        registry=registry,
        db=db,
        ledger=ledger,
        limiter=limiter,
        directory=directory,
        gate=gate,
        access=access,
        stored_chats=stored_chats,
        responses=responses,
        shutdown=shutdown,
        runner=runner if settings.batch_runner else None,
        files=files,
    )
    app = FrontedFastAPI(
        title="TokenDock",
        version=__version__,
        lifespan=lifetime.span,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.services = services
    app.state.responses = responses
    app.state.conversations = Conversations(conversation_store, storage_quota)
    app.state.compaction = Seal(load_secret(settings))  # signs /v1/responses/compact items
    app.state.batches = batches
    app.state.uploads = Uploads(files, upload_store, part_max_bytes=settings.upload_part_max_bytes)
    app.state.sessions = Sessions(
        load_secret(settings),
        max_age=settings.session_days * 86400,
        secure=settings.cookies_secure(),
    )
    _install_routes(app, settings, metrics, shutdown)
    return app


def _observe(registry: ModelRegistry, metrics: Metrics) -> None:
    """Hooks the engines, spill-overs and upstream routers to the Prometheus metrics."""
    for engine in registry.engines():
        engine.on_tokenize = metrics.tokenized
    metrics.watch_engines(registry.engines())
    for spec in registry.specs():
        backend = registry.backend(spec.id)
        if isinstance(backend, SpillBackend):
            backend.on_spill = metrics.spilled
    for router in registry.upstreams.routers.values():
        router.on_health = metrics.deployment_health
        for deployment in router.deployments:
            metrics.deployment_health(router.model_id, deployment.name, True)


def _install_routes(
    app: FrontedFastAPI, settings: Settings, metrics: Metrics, shutdown: Shutdown
) -> None:
    """Every route, and TokenDock's own layers in front of FastAPI's stack."""
    errors.install(app)
    hot_routes = [*chat.routes, *completions.routes, *embeddings.routes, *messages.routes]
    app.router.routes.extend(hot_routes)  # the hot paths: plain routes
    app.router.routes.extend(responses_api.routes)
    app.router.routes.extend([*media.routes, *media_forms.routes])  # pass-through (upstreams)
    app.router.routes.extend(conversations_api.routes)  # /v1/conversations …
    app.router.routes.append(openapi_route())  # GET /openapi.json, written out in web/openapi.py
    metrics_api.warn_if_exposed(settings)
    dashboard = (pages.router, usage.router, playground.router, reference.router, admin.router)
    for api in (health.router, metrics_api.router, models.router, account.router, *dashboard):
        app.include_router(api)
    app.include_router(stored_chat_router)  # GET / POST / DELETE /v1/chat/completions/{id} …
    app.include_router(files_api.router)  # /v1/files …
    app.include_router(batches_api.router)  # /v1/batches …
    app.include_router(message_batches_api.router)  # /v1/messages/batches …
    app.include_router(uploads_router)  # /v1/uploads …
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    hot = {("POST", r.path): r.endpoint for r in hot_routes}

    def front(inner: ASGIApp) -> ASGIApp:  # web/front.py: ours first, then FastAPI's stack
        chain = ShutdownMiddleware(HotRoutes(inner, routes=hot), shutdown=shutdown)
        # The upload routes' bodies may be files (web/api/files.py): a larger cap for them only.
        return files_api.BodyLimits(
            RequestContextMiddleware(
                chain, max_body_bytes=settings.max_body_bytes, metrics=metrics
            ),
            RequestContextMiddleware(
                chain, max_body_bytes=files_api.upload_body_limit(settings), metrics=metrics
            ),
        )

    app.put_in_front(front)


@dataclass
class _Lifetime:
    """What the server starts before it serves and stops, in order, after its last request."""

    settings: Settings
    registry: ModelRegistry
    db: AsyncEngine
    ledger: Ledger
    limiter: Limiter
    directory: ModelDirectory
    gate: Gate
    access: AccessWatch
    stored_chats: StoredChats
    responses: Responses
    shutdown: Shutdown
    files: Files | None = None
    runner: BatchRunner | None = None

    @contextlib.asynccontextmanager
    async def span(self, app: FastAPI) -> AsyncIterator[None]:
        """FastAPI's lifespan."""
        ledger = self.ledger
        unwatch = self.shutdown.watch_signals()  # SIGTERM: in-flight requests get the grace
        # Holds this instance left behind when it last died are released before serving.
        released = await ledger.release_stale(owner=ledger.instance)
        if released:
            log.warning("released %d credit holds left by a previous crash", released)
        # This process's holds stay alive while their requests run; see billing/ledger.py.
        keeping = asyncio.create_task(ledger.keep_alive())
        # Models load in the background: /health answers at once, /ready once they are loaded.
        loading = asyncio.create_task(_load(self.registry, self.settings))
        sweeping = asyncio.create_task(_sweep(ledger, self.settings.sweep_seconds))
        # Expired files and uploads, and what a writer that died left half-written.
        tidying = asyncio.create_task(_tidy(self.files, FILE_SWEEP_SECONDS))
        await self.directory.refresh()
        following = asyncio.create_task(self.directory.follow(MODEL_SETTINGS_SECONDS))
        # Accounts disabled, keys revoked on any replica: their running work here ends.
        await self.access.start()
        watching = asyncio.create_task(self.access.follow())
        # Batch lines run here too (services/batch_runner.py), unless switched off.
        batching = asyncio.create_task(self.runner.run()) if self.runner is not None else None
        try:
            yield
        finally:
            for task in (loading, sweeping, tidying, following, keeping, watching, batching):
                if task is None:
                    continue
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.responses.close()  # background responses end their calls (then settle)
            await self.gate.drain()
            await self.stored_chats.drain()
            unwatch()
            await self._close()

    async def _close(self) -> None:
        # Every request has settled by now; a hold still open here lost its settlement
        # (e.g. the server's own deadline cancelled it): released now, not at next start.
        with contextlib.suppress(Exception):
            if leftover := await self.ledger.release_stale(owner=self.ledger.owner):
                log.warning("released %d credit holds still open at shutdown", leftover)
        await self.ledger.close()
        await self.registry.close()
        await self.limiter.close()
        await self.db.dispose()


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        retries=settings.upstream_retries,
        deadline=settings.upstream_retry_deadline,
        allowed_fails=settings.upstream_allowed_fails,
        cooldown=settings.upstream_cooldown_seconds,
        probe_every=settings.upstream_probe_seconds,
    )


def build_limiter(settings: Settings) -> Limiter:
    if settings.rate_limit_backend == "redis":
        from tokendock.limits.redis import RedisLimiter

        return RedisLimiter(
            settings.redis_url,
            fail_open=settings.rate_limit_fail_open,
            prefix=settings.redis_prefix,
        )
    return MemoryLimiter()


async def _sweep(ledger: Ledger, every: float) -> None:
    """Release holds no longer renewed (of crashed replicas sharing the database)."""
    while True:
        await asyncio.sleep(every)
        try:
            released = await ledger.release_stale()
            if released:
                log.warning("released %d expired credit holds", released)
        except Exception:
            log.exception("hold sweep failed")


async def _tidy(files: Files | None, every: float) -> None:
    """`Files.sweep` every so often, on every replica (safe at once on all)."""
    while files is not None:
        await asyncio.sleep(every)
        try:
            if removed := await files.sweep():
                log.info("removed %d expired or abandoned files and uploads", removed)
        except Exception:
            log.exception("file sweep failed")


async def _load(registry: ModelRegistry, settings: Settings) -> None:
    await registry.start()
    base = settings.base_url or f"http://{settings.host}:{settings.port}"
    for spec in registry.specs():
        router = registry.router(spec.id)
        if router is not None:
            names = ", ".join(d.name for d in router.deployments)
            what = "spills over to" if spec.spill_after is not None else "upstream deployments"
            log.info("model %s: %s %s", spec.id, what, names)
            if spec.spill_after is None:
                continue
        state = "ready" if registry.backend(spec.id).ready else "FAILED to load"
        log.info("model %s: %s (llama.cpp, context %d tokens)", spec.id, state, spec.context_length)
    log.info(
        "TokenDock %s serving %s at %s/v1",
        __version__,
        ", ".join(s.id for s in registry.specs()),
        base,
    )
    # What start-up built lives as long as the process: moved out of the collector's sight, so
    # a full collection walks a few thousand request objects instead of ~150,000 (its pause
    # was the soak's p99 on a busy machine; docs/reliability.md).
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """For `--workers N`: each worker process builds its app from TOKENDOCK_* variables.
    Each worker's instance name ends in its pid (TOKENDOCK_INSTANCE_ID set or not), so a worker
    starting never releases a live sibling's holds; a dead worker's are swept past their TTL."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        instance = f"{settings.instance_name()}:{os.getpid()}"
        settings = settings.model_copy(update={"instance_id": instance})
    return create_app(settings)

"""The SaaS API: `uvicorn api.main:app`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, openapi, ui
from api.middleware import RequestContextMiddleware
from api.routes import admin, billing, events, health, jobs, webhooks
from shared import logs
from shared.billing.periods import install_clock
from shared.config import Settings, get_settings
from shared.heap import freeze_heap
from shared.queue import open_queue
from shared.retry import forever
from shared.runtime import build_runtime
from shared.teams.keycache import KeyCache


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; connections open in the lifespan, not at import."""
    settings = settings or get_settings()
    settings.check_production()
    install_clock(settings)
    logs.configure("DEBUG" if settings.debug else "INFO", secrets=settings.secret_values())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The queue connects on first use: the API starts (and accepts jobs durably) while
        # Redis is down; the reconciler enqueues them once it is back.
        queue = open_queue(settings, retry_attempts=1, bounded=True)
        cache = KeyCache(settings.auth_key_cache_seconds)
        rt = build_runtime(settings, queue, key_cache=cache)
        app.state.saas = rt
        # The key cache is on only while this listener is subscribed (fail closed).
        listener = asyncio.create_task(
            forever(lambda: cache.listen(queue, settings), name="key cache listener")
        )
        freeze_heap("api start")  # the collector leaves the imported modules and app alone
        try:
            yield
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await rt.aclose()

    app = FastAPI(
        title="saas-llm",
        version="0.1.0",
        description="LLM work as durable, billable jobs.",
        lifespan=lifespan,
        debug=settings.debug,
        # DOCS_ENABLED; unset: on in development, off in production.
        docs_url="/docs" if settings.docs_on else None,
        redoc_url="/redoc" if settings.docs_on else None,
        openapi_url="/openapi.json" if settings.docs_on else None,
    )
    errors.install(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.jobs_max_body_bytes,
        max_jsonl_bytes=settings.jobs_max_jsonl_bytes,
    )
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(billing.admin_router)
    app.include_router(billing.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(webhooks.router)
    ui.install(app)
    app.state.event_streams = events.StreamSlots(settings)
    openapi.document(app)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn api.main:app` builds the app on first access, so importing this module (tests,
    # tooling) does not read settings or refuse to start.
    if name == "app":
        return create_app()
    raise AttributeError(name)

"""What a process builds once and every request or task uses: the runtime container.

The API and the worker build the same `Runtime` (settings, database, queue, HTTP client, the
LLM backend and its model catalog); the worker adds its in-flight calls. Sessions made by its
sessionmaker carry the live-status waker, so the lifecycle can wake a job's streams after commit
without knowing about Redis.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db import SessionMaker, create_engine, create_sessionmaker, waker_info
from shared.llm.backend import LLMBackend, ModelCatalog, ProxyBackend
from shared.llm.client import LLMResult
from shared.queue import Publisher, Queue, job_channel, notify_team
from shared.teams.keycache import KeyCache
from shared.teams.limits import RedisRequestLimiter, RequestLimiter


@dataclass
class Runtime:
    """Everything a process shares between its requests or tasks."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    queue: Queue
    http: httpx.AsyncClient
    backend: LLMBackend
    catalog: ModelCatalog
    limiter: RequestLimiter
    # Worker only: provider requests in flight, by call id, so a cancel can abort them.
    inflight: dict[str, asyncio.Task[LLMResult]] = field(default_factory=dict)
    draining: bool = False
    # API only: authenticated keys (shared/teams/keycache.py); None: no cache.
    key_cache: KeyCache | None = None
    # Sessions without a transaction (autocommit), for requests that only read: no BEGIN and
    # COMMIT round trips. None: use `sessionmaker`.
    reader: SessionMaker | None = None
    # The job wake-ups of this process's sessions (`Publisher`); None: none sent.
    publisher: Publisher | None = None

    async def aclose(self) -> None:
        if self.publisher is not None:
            await self.publisher.aclose()
        await self.backend.aclose()
        await self.http.aclose()
        await self.queue.aclose()
        await self.engine.dispose()


def default_backend(settings: Settings, http: httpx.AsyncClient) -> LLMBackend:
    """The gateway `LLM_GATEWAY` names: the LiteLLM proxy, or LiteLLM's Router in this process."""
    if settings.llm_gateway == "inprocess":
        from shared.llm.inprocess import InProcessBackend

        return InProcessBackend(settings.litellm_config_path)
    return ProxyBackend(
        http,
        base_url=settings.litellm_proxy_url,
        master_key=settings.litellm_master_key,
        # One connection per call a worker may run at once (WORKER_MAX_JOBS).
        max_connections=max(100, settings.worker_max_jobs),
    )


def build_runtime(
    settings: Settings,
    queue: Queue,
    *,
    pool_size: int | None = None,
    http: httpx.AsyncClient | None = None,
    backend: LLMBackend | None = None,
    limiter: RequestLimiter | None = None,
    key_cache: KeyCache | None = None,
) -> Runtime:
    """Wire a runtime; `backend` defaults to the LiteLLM proxy. With `key_cache` (the API), a
    team's change drops its cached keys here at once, and in other processes through Redis."""
    engine = create_engine(settings, pool_size=pool_size)
    http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)

    async def team_changed(team_id: str) -> None:
        if key_cache is not None:
            key_cache.drop_team(team_id)
        await notify_team(queue, settings, team_id)

    publisher = Publisher(queue)

    def job_changed(job_id: str) -> None:
        publisher.publish(job_channel(settings, job_id))

    info = waker_info(job=job_changed, team=team_changed)
    backend = backend or default_backend(settings, http)
    catalog = ModelCatalog(backend, ttl=settings.litellm_models_cache_seconds)
    return Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine, info=info),
        queue=queue,
        http=http,
        backend=backend,
        catalog=catalog,
        limiter=limiter or RedisRequestLimiter(queue, settings.worker_queue_name),
        key_cache=key_cache,
        publisher=publisher,
        reader=create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT")),
    )

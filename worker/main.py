"""The worker: `arq worker.main.WorkerSettings`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
from arq import Worker, cron
from arq.connections import ArqRedis

from shared import logs
from shared.config import get_settings
from shared.db import create_engine, create_sessionmaker
from shared.llm.service import WorkerDeps, abort_calls
from shared.queue import (
    DELIVER_EVENT,
    RUN_CALL,
    cancel_channel,
    deserialize,
    redis_settings,
    serialize,
    webhook_queue_name,
)
from shared.webhooks.dispatch import run_sweeper
from worker.tasks.calls import reconcile_task, run_call
from worker.tasks.webhooks import deliver_event

log = logging.getLogger("saas_llm.worker")
settings = get_settings()


async def _listen_for_cancels(deps: WorkerDeps) -> None:
    """Abort in-flight provider requests of calls that were cancelled through the API."""
    while True:
        try:
            pubsub = deps.queue.pubsub()
            await pubsub.subscribe(cancel_channel(deps.settings))
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                call_ids = json.loads(message["data"])
                aborted = abort_calls(deps, call_ids)
                if aborted:
                    log.info("aborted calls", extra={"count": aborted})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("cancel listener lost its connection; reconnecting")
            await asyncio.sleep(1)


async def startup(ctx: dict[str, Any]) -> None:
    logs.configure("DEBUG" if settings.debug else "INFO")
    engine = create_engine(settings, pool_size=min(settings.worker_max_jobs, 50))
    # Room for every call and every webhook delivery in flight at once.
    limits = httpx.Limits(
        max_connections=settings.worker_max_jobs + settings.webhook_max_concurrency + 10,
        max_keepalive_connections=100,
    )
    queue: ArqRedis = ctx["redis"]
    deps = WorkerDeps(
        settings=settings,
        sessionmaker=create_sessionmaker(engine),
        http=httpx.AsyncClient(limits=limits, follow_redirects=False),
        queue=queue,
    )
    ctx["deps"] = deps
    ctx["engine"] = engine
    ctx["cancel_listener"] = asyncio.create_task(_listen_for_cancels(deps))
    ctx["webhook_sweeper"] = asyncio.create_task(run_sweeper(deps))
    ctx["webhook_worker_task"] = asyncio.create_task(_run_webhook_worker(ctx, queue, deps))
    log.info("worker started", extra={"max_jobs": settings.worker_max_jobs})


def webhook_worker(queue: ArqRedis, deps: WorkerDeps) -> Worker:
    """A second arq consumer in this process, for the webhook queue only."""
    return Worker(
        functions=[deliver_event],
        queue_name=webhook_queue_name(settings),
        redis_pool=queue,
        ctx={"deps": deps},
        handle_signals=False,
        max_jobs=settings.webhook_max_concurrency,
        poll_delay=settings.worker_poll_delay_seconds,
        keep_result=0,
        max_tries=10_000,
        job_timeout=int(settings.webhook_timeout_seconds + 60),
        job_serializer=serialize,
        job_deserializer=deserialize,
        health_check_interval=3600,
    )


async def _run_webhook_worker(ctx: dict[str, Any], queue: ArqRedis, deps: WorkerDeps) -> None:
    """Keep the webhook consumer running: if it fails (say, on a Redis failover), start another."""
    while True:
        hooks = webhook_worker(queue, deps)
        ctx["webhook_worker"] = hooks
        try:
            await hooks.async_run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook consumer failed; starting a new one")
            await asyncio.sleep(1)


async def _stop_webhook_worker(ctx: dict[str, Any]) -> None:
    """Stop taking deliveries, give those in flight a short drain (the calls' drain has already
    run, and the whole stop must fit the platform's grace period), then stop."""
    hooks: Worker | None = ctx.get("webhook_worker")
    task: asyncio.Task[None] | None = ctx.get("webhook_worker_task")
    if hooks is None or task is None:
        return
    hooks.allow_pick_jobs = False
    pending = [t for t in hooks.tasks.values() if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=min(settings.worker_drain_seconds, 5.0))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    for t in hooks.tasks.values():
        t.cancel()  # an attempt cut short is retried once its lease ends


async def shutdown(ctx: dict[str, Any]) -> None:
    await _stop_webhook_worker(ctx)
    for name in ("cancel_listener", "webhook_sweeper"):
        background: asyncio.Task[None] | None = ctx.get(name)
        if background is not None:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
    deps: WorkerDeps | None = ctx.get("deps")
    if deps is not None:
        await deps.http.aclose()
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()
    log.info("worker stopped")


class WorkerSettings:
    """arq settings, from the environment (`WORKER_*`)."""

    functions = [run_call, deliver_event]
    cron_jobs = [
        cron(
            reconcile_task,
            second=set(range(0, 60, max(1, min(settings.worker_reconcile_seconds, 60)))),
            run_at_startup=True,
            unique=False,
            timeout=120,
        )
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(settings)
    queue_name = settings.worker_queue_name
    max_jobs = settings.worker_max_jobs
    poll_delay = settings.worker_poll_delay_seconds
    job_timeout = int(settings.worker_call_timeout_seconds + 60)
    keep_result = 0
    # Tries are spent only by "team busy" retries and shutdowns; failures are handled in the task.
    max_tries = 10_000
    job_completion_wait = int(settings.worker_drain_seconds)
    job_serializer = serialize
    job_deserializer = deserialize
    health_check_interval = 30


assert RUN_CALL == run_call.__name__
assert DELIVER_EVENT == deliver_event.__name__

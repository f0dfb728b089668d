"""The worker: `arq worker.main.WorkerSettings`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any

import httpx
import uvloop
from arq import Worker, cron
from arq.connections import ArqRedis

from shared import logs
from shared.billing.periods import install_clock
from shared.billing.prices import warm_counter
from shared.config import get_settings
from shared.heap import freeze_heap
from shared.llm.inprocess import InProcessBackend
from shared.llm.runner import abort_calls, keep_leases
from shared.queue import (
    DELIVER_EVENT,
    RUN_CALL,
    LongPollQueue,
    cancel_channel,
    deserialize,
    open_queue,
    redis_settings,
    serialize,
    wake_channel,
    webhook_queue_name,
)
from shared.retry import forever
from shared.runtime import Runtime, build_runtime
from shared.webhooks.delivery import WebhookSender
from shared.webhooks.runner import Sweeper, run_sweeper
from worker import health
from worker.tasks.calls import reconcile_task, run_call
from worker.tasks.retention import retention_task
from worker.tasks.webhooks import deliver_event

log = logging.getLogger("saas_llm.worker")
settings = get_settings()
# Refuse to start in production with an unfit secret, before connecting anywhere.
settings.check_production()
install_clock(settings)  # BILLING_CLOCK_FILE, development and tests only
# arq creates its event loop after importing this module: make it uvloop's (as uvicorn's is),
# which halves the loop's own overhead per task and socket operation.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _listen(rt: Runtime, queue: LongPollQueue) -> None:
    """Wake the queue reads on the wake channel's messages, and abort in-flight provider
    requests of calls that were cancelled through the API."""
    pubsub = rt.queue.pubsub()
    wakes, cancels = wake_channel(queue), cancel_channel(rt.settings)
    try:
        await pubsub.subscribe(wakes, cancels)
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            channel = _text(message["channel"])
            if channel == wakes:
                queue.wake(_text(message["data"]))
                continue
            aborted = abort_calls(rt, json.loads(message["data"]))
            if aborted:
                log.info("aborted calls", extra={"count": aborted})
    finally:
        with contextlib.suppress(Exception):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        # The listener's connection broke, so Redis went away: the idle pooled connections
        # are dead too. Closed now, each reconnects when next used; used as they are, the
        # first WATCH on one (arq's start of a task) would fail and stop the worker.
        with contextlib.suppress(Exception):
            await queue.connection_pool.disconnect(inuse_connections=False)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def startup(ctx: dict[str, Any]) -> None:
    logs.configure("DEBUG" if settings.debug else "INFO", secrets=settings.secret_values())
    # Room for every call and every webhook delivery in flight at once.
    limits = httpx.Limits(
        max_connections=settings.worker_max_jobs + settings.webhook_max_concurrency + 10,
        max_keepalive_connections=100,
    )
    queue: LongPollQueue = ctx["redis"]
    queue.listen(settings.worker_queue_name)
    queue.listen(webhook_queue_name(settings))
    rt = build_runtime(
        settings,
        queue,
        pool_size=min(settings.worker_max_jobs, 50),
        http=httpx.AsyncClient(limits=limits, follow_redirects=False),
    )
    ctx["deps"] = rt
    # Webhooks have their own resolver and connection pools, apart from the proxy's.
    ctx["webhook_sender"] = WebhookSender(settings)
    await health.start(ctx, settings, rt.http)  # refuses a key the proxy rejects
    ctx["listener"] = asyncio.create_task(
        forever(lambda: _listen(rt, queue), name="wake and cancel listener")
    )
    ctx["sweeper"] = sweeper = Sweeper(rt, ctx["webhook_sender"])
    ctx["webhook_sweeper"] = asyncio.create_task(run_sweeper(sweeper))
    ctx["lease_keeper"] = asyncio.create_task(forever(lambda: keep_leases(rt), name="lease keeper"))
    ctx["webhook_worker_task"] = asyncio.create_task(
        forever(lambda: _run_webhook_worker(ctx, queue, rt), name="webhook consumer")
    )
    ctx["counter_warmup"] = asyncio.create_task(_warm_up(rt))
    log.info("worker started", extra={"max_jobs": settings.worker_max_jobs})


async def _warm_up(rt: Runtime) -> None:
    """LiteLLM's token counter (budget worst cases) imported and loaded in a thread: seconds of
    CPU once, off the event loop; calls are counted in threads until it is done. In in-process
    mode LiteLLM's Router is built next (on the loop, as its first call would build it). Then
    the start-up heap, LiteLLM's included, leaves the collector's walks (`freeze_heap`), and in
    in-process mode again once the Router has answered."""
    started = time.perf_counter()
    try:
        await asyncio.to_thread(warm_counter)
    except Exception:
        log.exception("token counter warm-up failed (calls are counted in threads)")
        return
    log.info("token counter ready", extra={"seconds": round(time.perf_counter() - started, 2)})
    if not isinstance(rt.backend, InProcessBackend):
        freeze_heap("worker warm-up")
        return
    try:
        rt.backend.router  # noqa: B018 - built now rather than by the first call
    except Exception:
        log.exception("LiteLLM's Router could not be built (the first call will try again)")
    freeze_heap("worker warm-up")
    # LiteLLM imports its provider's modules on its first call (~25,000 objects that live as
    # long as the worker): out of the collector's walks too, once they are there.
    await rt.backend.answered.wait()
    freeze_heap("the first in-process call")


def webhook_worker(queue: ArqRedis, rt: Runtime, sender: WebhookSender) -> Worker:
    """A second arq consumer in this process, for the webhook queue only."""
    return Worker(
        functions=[deliver_event],
        queue_name=webhook_queue_name(settings),
        redis_pool=queue,
        ctx={"deps": rt, "webhook_sender": sender},
        handle_signals=False,
        max_jobs=settings.webhook_max_concurrency,
        poll_delay=min(LongPollQueue.LOOP_SECONDS, settings.worker_poll_delay_seconds),
        keep_result=0,
        max_tries=10_000,
        job_timeout=int(settings.webhook_timeout_seconds + 60),
        job_serializer=serialize,
        job_deserializer=deserialize,
        health_check_interval=3600,
    )


async def _run_webhook_worker(ctx: dict[str, Any], queue: ArqRedis, rt: Runtime) -> None:
    """The webhook consumer; `forever` starts another if it fails (say, on a Redis failover)."""
    hooks = webhook_worker(queue, rt, ctx["webhook_sender"])
    ctx["webhook_worker"] = hooks
    await hooks.async_run()


async def _stop_webhook_worker(ctx: dict[str, Any]) -> None:
    """Stop taking deliveries, give those in flight (the sweeper's and the queue's) one short
    drain (the calls' drain has already run, and the whole stop must fit the platform's grace
    period), then stop."""
    seconds = min(settings.worker_drain_seconds, 5.0)
    sweeper: Sweeper | None = ctx.get("sweeper")
    hooks: Worker | None = ctx.get("webhook_worker")
    task: asyncio.Task[None] | None = ctx.get("webhook_worker_task")
    drains: list[Awaitable[Any]] = [sweeper.drain(seconds)] if sweeper is not None else []
    if hooks is not None:
        hooks.allow_pick_jobs = False
        pending = [t for t in hooks.tasks.values() if not t.done()]
        if pending:
            drains.append(asyncio.wait(pending, timeout=seconds))
    await asyncio.gather(*drains)
    if hooks is None or task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    for t in hooks.tasks.values():
        t.cancel()  # an attempt cut short is retried once its lease ends


async def shutdown(ctx: dict[str, Any]) -> None:
    await health.stop(ctx)
    await _stop_webhook_worker(ctx)
    for name in ("listener", "webhook_sweeper", "lease_keeper", "counter_warmup"):
        background: asyncio.Task[None] | None = ctx.get(name)
        if background is not None:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
    rt: Runtime | None = ctx.get("deps")
    if rt is not None:
        # The queue connection belongs to arq, which closes it after this hook.
        if rt.publisher is not None:
            await rt.publisher.aclose()
        await rt.backend.aclose()
        await rt.http.aclose()
        await rt.engine.dispose()
    sender: WebhookSender | None = ctx.get("webhook_sender")
    if sender is not None:
        await sender.aclose()
    log.info("worker stopped")


def _every(seconds: int) -> dict[str, Any]:
    """arq cron fields for "every `seconds`" (whole minutes past 60 s)."""
    if seconds <= 60:
        return {"second": set(range(0, 60, max(1, seconds)))}
    return {"minute": set(range(0, 60, max(1, min(seconds // 60, 60)))), "second": {0}}


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
        ),
        cron(
            retention_task,
            **_every(settings.worker_retention_seconds),
            run_at_startup=True,
            unique=False,
            timeout=600,
        ),
    ]
    on_startup = startup
    on_shutdown = shutdown
    on_job_start = health.job_started
    # The queue client is ours (arq would make a plain one from `redis_settings`, which
    # `arq --check` still uses): its empty reads wait for a wake-up (`LongPollQueue`).
    redis_settings = redis_settings(settings)
    redis_pool = open_queue(settings, long_poll=True)
    queue_name = settings.worker_queue_name
    max_jobs = settings.worker_max_jobs
    # The reads themselves wait for new entries, up to WORKER_POLL_DELAY_SECONDS (see
    # `LongPollQueue`): arq's delay is only the pause between one read and the next.
    poll_delay = min(LongPollQueue.LOOP_SECONDS, settings.worker_poll_delay_seconds)
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

"""Running one call: claim the row, ask the proxy, record the outcome exactly once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.config import Settings
from shared.db import SessionMaker, transaction
from shared.jobs.lifecycle import (
    CallOutcome,
    TeamBusy,
    claim_call,
    finish_call,
    job_deadline,
    release_call,
)
from shared.llm.client import (
    LLMError,
    LLMResult,
    PermanentLLMError,
    TransientLLMError,
    chat_completion,
)
from shared.models import Call, Job
from shared.queue import enqueue_call, notify_job
from shared.retry import backoff

log = logging.getLogger("saas_llm.worker")
T = TypeVar("T")
DEADLINE_EXCEEDED = PermanentLLMError("the job's deadline passed before this call could finish")
DEADLINE_EXCEEDED.type = "deadline_exceeded"


@dataclass
class WorkerDeps:
    """What every task needs, built once per worker process."""

    settings: Settings
    sessionmaker: SessionMaker
    http: httpx.AsyncClient
    queue: ArqRedis
    inflight: dict[str, asyncio.Task[LLMResult]] = field(default_factory=dict)
    draining: bool = False


def scrub(value: Any) -> Any:
    """Replace NUL characters, which Postgres JSONB cannot store, in every string of `value`."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def _success(result: LLMResult) -> CallOutcome:
    return CallOutcome(
        status="succeeded",
        response=scrub(result.body),
        model_used=result.model_used,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.total_tokens,
        cost_usd=result.cost_usd,
        latency_ms=result.latency_ms,
        litellm_call_id=result.litellm_call_id,
    )


async def run_call(deps: WorkerDeps, call_id: str) -> str:
    """Run `call_id` if it is still queued; safe to run any number of times.

    Returns "busy" when the team is at its in-flight limit: the task should run again later."""
    settings = deps.settings
    lease = settings.worker_call_timeout_seconds + settings.worker_lease_grace_seconds
    try:
        async with transaction(deps.sessionmaker) as session:
            call = await claim_call(session, call_id, lease)
            deadline = await job_deadline(session, call.job_id) if call is not None else None
    except TeamBusy:
        return "busy"
    if call is None:
        return "skipped"
    extra = {"call_id": call_id, "job_id": call.job_id, "team_id": call.team_id}
    try:
        return await _run_claimed(deps, call, deadline, extra)
    except Exception as exc:
        if _infrastructure(exc):
            # Postgres or Redis is away. Hand the call back as soon as they return; if they stay
            # away, it stays `running` and the reconciler hands it back when its lease ends.
            if await _release_when_possible(deps, call.id, call.attempts):
                return "retry"
            raise
        # A fault of this call (bad data, a bug): fail it rather than retry it forever.
        log.exception("call could not be processed", extra=extra)
        error = {"type": "internal_error", "message": "the worker could not process this call"}
        await _finish(deps, call_id, call.attempts, CallOutcome(status="failed", error=error))
        await notify_job(deps.queue, settings, call.job_id)
        return "failed"


async def _run_claimed(
    deps: WorkerDeps, call: Call, deadline: datetime | None, extra: dict[str, str]
) -> str:
    settings = deps.settings
    call_id, attempt = call.id, call.attempts
    timeout = min(
        float(call.request.get("timeout") or settings.worker_call_timeout_seconds),
        settings.worker_call_timeout_seconds,
    )
    if deadline is not None:
        remaining = (deadline - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            return await _fail(deps, call_id, attempt, DEADLINE_EXCEEDED, extra)
        timeout = min(timeout, remaining)
    request = asyncio.create_task(
        chat_completion(
            deps.http,
            base_url=settings.litellm_proxy_url,
            master_key=settings.litellm_master_key,
            body=call.request,
            timeout=timeout,
        )
    )
    # Registered before any await: a cancel published from now on finds the request.
    deps.inflight[call_id] = request
    await notify_job(deps.queue, settings, call.job_id)
    try:
        result = await asyncio.shield(request)
    except asyncio.CancelledError:
        if request.cancelled() and not _current_cancelling():
            # Aborted through the cancel channel: the row is already `cancelled`.
            log.info("call aborted", extra=extra)
            return "aborted"
        request.cancel()
        # The worker is stopping: hand the call back without counting this attempt.
        async with transaction(deps.sessionmaker) as session:
            await release_call(session, call_id, attempt, delay=0, error=None, refund_attempt=True)
        # arq re-queues its cancelled task; this entry covers a worker that exits for good.
        await enqueue_call(deps.queue, call_id, attempts=attempt - 1)
        log.info("call re-queued at shutdown", extra=extra)
        raise
    except TransientLLMError as exc:
        if attempt < settings.worker_max_attempts:
            delay = backoff(
                attempt,
                base=settings.worker_retry_base_seconds,
                cap=settings.worker_retry_max_seconds,
                retry_after=exc.retry_after,
            )
            released = await _release(deps, call_id, attempt, delay, scrub(exc.as_error()))
            await notify_job(deps.queue, settings, call.job_id)
            if released:
                await enqueue_call(deps.queue, call_id, attempts=attempt, defer_by=delay)
            log.info(
                "call retry scheduled",
                extra={
                    **extra,
                    "attempt": attempt,
                    "delay_s": round(delay, 3),
                    "status": exc.status,
                },
            )
            return "retry"
        return await _fail(deps, call_id, attempt, exc, extra)
    except PermanentLLMError as exc:
        return await _fail(deps, call_id, attempt, exc, extra)
    finally:
        deps.inflight.pop(call_id, None)
    ended = await _finish(deps, call_id, attempt, _success(result))
    await notify_job(deps.queue, settings, call.job_id)
    log.info("call succeeded", extra={**extra, "latency_ms": result.latency_ms})
    if ended is not None:
        log.info("job ended", extra={**extra, "status": ended.status})
    return "succeeded"


async def _uninterrupted(coro: Coroutine[Any, Any, T]) -> T:
    """Complete a database write even if the worker is stopped meanwhile, then re-raise the stop;
    otherwise a call whose answer arrived would stay `running` until its lease ran out."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _finish(deps: WorkerDeps, call_id: str, attempt: int, outcome: CallOutcome) -> Job | None:
    """Record the outcome; through a short Postgres outage, keep the answer and try again
    rather than paying the provider for it twice."""

    async def write() -> Job | None:
        async with transaction(deps.sessionmaker) as session:
            return await finish_call(session, call_id, attempt, outcome)

    for pause in (0.5, 1.0, 2.0, 4.0):
        try:
            return await _uninterrupted(write())
        except Exception as exc:
            if not _infrastructure(exc):
                raise
            await asyncio.sleep(pause)
    return await _uninterrupted(write())


async def _release(
    deps: WorkerDeps, call_id: str, attempt: int, delay: float, error: dict[str, Any] | None
) -> bool:
    async def write() -> bool:
        async with transaction(deps.sessionmaker) as session:
            return await release_call(session, call_id, attempt, delay=delay, error=error)

    return await _uninterrupted(write())


async def _fail(
    deps: WorkerDeps, call_id: str, attempt: int, exc: LLMError, extra: dict[str, str]
) -> str:
    error = scrub(exc.as_error())
    error["attempts"] = attempt
    ended = await _finish(deps, call_id, attempt, CallOutcome(status="failed", error=error))
    await notify_job(deps.queue, deps.settings, extra["job_id"])
    log.warning("call failed", extra={**extra, "error": exc.message[:500]})
    if ended is not None:
        log.info("job ended", extra={**extra, "status": ended.status})
    return "failed"


async def _release_when_possible(deps: WorkerDeps, call_id: str, attempt: int) -> bool:
    """Try for a few seconds to put the call back in the queue; True once it is."""
    for pause in (0.5, 1.0, 2.0, 4.0):
        await asyncio.sleep(pause)
        try:
            await _release(deps, call_id, attempt, 0.0, None)
            # Also when it was already released (by the retry path) but not enqueued.
            await enqueue_call(deps.queue, call_id, attempts=attempt)
            return True
        except Exception as exc:
            if not _infrastructure(exc):
                raise
    return False


def _infrastructure(exc: BaseException) -> bool:
    """True for errors of the platform's own services, which pass; False for the call's own."""
    if isinstance(exc, InterfaceError) and isinstance(
        getattr(exc.orig, "__cause__", None), ValueError
    ):
        return False  # asyncpg's client-side data errors (bad values) arrive as InterfaceError
    if isinstance(exc, OSError | RedisError | PoolTimeout | OperationalError | InterfaceError):
        return True
    if isinstance(exc, DBAPIError):
        code = str(getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None) or "")
        return not code.startswith("22")  # class 22: the data itself cannot be stored
    return False


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


def abort_calls(deps: WorkerDeps, call_ids: list[str]) -> int:
    """Abort the provider requests of these calls if this worker runs them."""
    aborted = 0
    for call_id in call_ids:
        task = deps.inflight.get(call_id)
        if task is not None and not task.done():
            task.cancel()
            aborted += 1
    return aborted

"""The call runner: claim the row, ask the LLM backend, record the outcome exactly once.

Every path that hands a call back to the queue (a transient provider error, an outage of
Postgres or Redis, a worker stopping) is bounded: a provider retry and an outage each use up an
attempt, and a call out of attempts fails; only a graceful shutdown gives its attempt back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import autocommit, classify_db_error, transaction
from shared.jobs.fairness import choose_and_claim, claim_fair
from shared.jobs.lifecycle import (
    CallOutcome,
    TeamBusy,
    fail_call,
    finish_call,
    finish_call_alone,
    maybe_finish_job,
    release_call,
    renew_call_leases,
)
from shared.jobs.money import pause_job, reserve_for_call
from shared.llm.cache import CachePolicy, cache_policy, with_cache
from shared.llm.client import LLMError, LLMResult, PermanentLLMError, TransientLLMError
from shared.models import Call, CallStatus, Job, Team
from shared.queue import enqueue_call, enqueue_call_again
from shared.retry import backoff, retrying
from shared.runtime import Runtime

log = logging.getLogger("saas_llm.worker")
T = TypeVar("T")
DEADLINE_EXCEEDED = PermanentLLMError("the job's deadline passed before this call could finish")
DEADLINE_EXCEEDED.type = "deadline_exceeded"
INTERNAL_ERROR = {"type": "internal_error", "message": "the worker could not process this call"}
OUTAGE_ATTEMPTS = {
    "type": "worker_lost",
    "message": "the platform's database or queue was unavailable on every attempt",
}


def scrub(value: Any) -> Any:
    """Replace NUL characters, which Postgres JSONB cannot store, in every string of `value`."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    return value


def infrastructure(exc: BaseException) -> bool:
    """True for outages of the platform's own services, which pass; False for the call's own
    faults (bad data, a constraint, a bug), which must not be retried forever."""
    if isinstance(exc, RedisError):
        return True
    kind = classify_db_error(exc)
    return kind in ("outage", "transient")


def _success(result: LLMResult) -> CallOutcome:
    return CallOutcome(
        status=CallStatus.SUCCEEDED,
        response=scrub(result.body),
        model_used=result.model_used,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.total_tokens,
        cost_usd=result.cost_usd,
        latency_ms=result.latency_ms,
        litellm_call_id=result.litellm_call_id,
        cached=result.cached,
    )


async def run_call(rt: Runtime, call_id: str) -> tuple[str, bool]:
    """Run the fair choice for the queue entry of `call_id` (`shared.jobs.fairness`): that call
    if it is still queued and its turn, else another team's or a higher priority call; safe to
    run any number of times.

    Returns the outcome ("busy" when the team is at its in-flight limit: the entry should run
    again later) and whether the entry must go back to the queue for its own call (another call
    ran and `call_id` could not be given a fresh entry at once)."""
    settings = rt.settings
    lease = settings.worker_lease_seconds
    swapped = False
    try:
        # The fair choice takes no lock: it needs no transaction, nor does the claim when it is
        # one statement (the common case), which saves the BEGIN and COMMIT round trips; then
        # both are one statement (`choose_and_claim`).
        async with autocommit(rt.sessionmaker) as session:
            choice, claimed = await choose_and_claim(session, call_id, lease)
            if claimed is None and (choice.own is None or choice.one_statement):
                claimed = await claim_fair(session, call_id, lease, choice)
        if claimed is None or (claimed.team is not None and claimed.team.budget_usd is not None):
            async with transaction(rt.sessionmaker) as session:
                # A budget set since the choice is reserved here, still before the request.
                claimed = claimed or await claim_fair(session, call_id, lease, choice)
                if claimed.call is not None:
                    # The team's row came back with the claim: neither step selects it again.
                    refused = await reserve_for_call(session, claimed.call, claimed.team)
                    if refused is not None:
                        return await _refused(session, claimed.call, refused), claimed.swapped
        call, swapped, deadline = claimed.call, claimed.swapped, claimed.deadline
        cache = None
        if call is not None and claimed.team is not None:
            cache = cache_policy(claimed.team, settings.cache_default_ttl_seconds)
    except TeamBusy:
        return "busy", False
    if call is None:
        return "skipped", False
    if swapped:
        # The entry's own call must not wait for this one to end (a held or slow call would
        # starve it with slots free): it gets a fresh entry now. If Redis refuses, the entry
        # goes back to the queue when this call ends, as before.
        try:
            await enqueue_call_again(rt.queue, call_id)
            swapped = False
        except (RedisError, OSError):
            log.warning("could not queue the swapped call again", extra={"call_id": call_id})
    extra = {"call_id": call.id, "job_id": call.job_id, "team_id": call.team_id}
    try:
        run = _run_claimed(rt, call, deadline, extra, cache, claimed.team, claimed.job_calls)
        return await run, swapped
    except Exception as exc:
        if infrastructure(exc):
            # Postgres or Redis is away. Hand the call back as soon as they return; if they stay
            # away, it stays `running` and the reconciler hands it back when its lease ends.
            if await _hand_back_when_possible(rt, call.id, call.attempts):
                return "retry", swapped
            raise
        # A fault of this call (bad data, a bug): fail it rather than retry it forever.
        log.exception("call could not be processed", extra=extra)
        await _finish(
            rt, call.id, call.attempts, CallOutcome(CallStatus.FAILED, error=INTERNAL_ERROR)
        )
        return "failed", swapped


async def _refused(session: AsyncSession, call: Call, error: dict[str, Any]) -> str:
    """The budget cannot hold this call's worst case: with on_limit `pause` the call goes back
    to the queue and its job pauses; with `reject` the call fails with `budget_exceeded`."""
    if error.pop("on_limit", "reject") == "pause":
        await release_call(
            session, call.id, call.attempts, delay=0, error=None, refund_attempt=True
        )
        await pause_job(session, call.job_id, "budget_exceeded")
        return "paused"
    await fail_call(session, call.id, error)
    return "failed"


def _timeout(rt: Runtime, call: Call, deadline: datetime | None) -> float:
    """This attempt's timeout: the call's own, within the worker's, within the job's deadline."""
    limit = rt.settings.worker_call_timeout_seconds
    timeout = min(float(call.request.get("timeout") or limit), limit)
    if deadline is not None:
        timeout = min(timeout, (deadline - datetime.now(UTC)).total_seconds())
    return timeout


async def _run_claimed(
    rt: Runtime,
    call: Call,
    deadline: datetime | None,
    extra: dict[str, str],
    cache: CachePolicy | None = None,
    team: Team | None = None,
    job_calls: int = 0,
) -> str:
    """Ask the backend and record the outcome; `team` (the row the claim read) prices the
    answer without a query, and `job_calls` (its job's calls) chooses how the end is written
    (`_finish`)."""
    settings = rt.settings
    call_id, attempt = call.id, call.attempts
    timeout = _timeout(rt, call, deadline)
    if timeout <= 0:
        return await _fail(rt, call_id, attempt, DEADLINE_EXCEEDED, extra, job_calls)
    body = with_cache(call.request, cache)
    request = asyncio.create_task(rt.backend.complete(body, timeout=timeout))
    # Registered before any await: a cancel published from now on finds the request.
    rt.inflight[call_id] = request
    try:
        result = await asyncio.shield(request)
    except asyncio.CancelledError:
        if request.cancelled() and not _current_cancelling():
            # Aborted through the cancel channel: the row is already `cancelled`.
            log.info("call aborted", extra=extra)
            return "aborted"
        request.cancel()
        # The worker is stopping: hand the call back without counting this attempt (shielded:
        # a second cancel while stopping must not leave the call running until its lease ends).
        await _uninterrupted(_hand_back_at_shutdown(rt, call_id, attempt))
        # arq re-queues its cancelled task; this entry covers a worker that exits for good.
        await enqueue_call(rt.queue, call_id, attempts=attempt - 1)
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
            if await _release(rt, call_id, attempt, delay, scrub(exc.as_error())):
                await enqueue_call(rt.queue, call_id, attempts=attempt, defer_by=delay)
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
        return await _fail(rt, call_id, attempt, exc, extra, job_calls)
    except PermanentLLMError as exc:
        return await _fail(rt, call_id, attempt, exc, extra, job_calls)
    finally:
        rt.inflight.pop(call_id, None)
    ended = await _finish(
        rt,
        call_id,
        attempt,
        _success(result),
        team=team,
        model=call.model_requested,
        job_calls=job_calls,
    )
    log.info("call succeeded", extra={**extra, "latency_ms": result.latency_ms})
    if ended is not None:
        log.info("job ended", extra={**extra, "status": ended.status})
    return "succeeded"


async def _hand_back_at_shutdown(rt: Runtime, call_id: str, attempt: int) -> None:
    async with transaction(rt.sessionmaker) as session:
        await release_call(session, call_id, attempt, delay=0, error=None, refund_attempt=True)


async def _uninterrupted(coro: Coroutine[Any, Any, T]) -> T:
    """Complete a database write even if the worker is stopped meanwhile, then re-raise the stop;
    otherwise a call whose answer arrived would stay `running` until its lease ran out."""
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _finish(
    rt: Runtime,
    call_id: str,
    attempt: int,
    outcome: CallOutcome,
    *,
    team: Team | None = None,
    model: str | None = None,
    job_calls: int = 0,
) -> Job | None:
    """Record the outcome; through a short Postgres outage, keep the answer and try again
    rather than paying the provider for it twice.

    A call of a job of several calls (`job_calls`), of a team without a budget, ends in a
    statement that commits by itself (`finish_call_alone`): its job's row is locked only while
    Postgres runs it, so the ends of one big job's calls do not queue on that lock across the
    workers' round trips. Any other call ends in one transaction with its job's end when it
    is the last (a one-call job: its call's statement also reads what the end needs,
    `finish_call(only_call=True)`; a budget: its reservation and thresholds)."""

    async def write() -> Job | None:
        if team is None or team.budget_usd is not None or job_calls <= 1:
            async with transaction(rt.sessionmaker) as session:
                return await finish_call(
                    session,
                    call_id,
                    attempt,
                    outcome,
                    team=team,
                    model=model,
                    only_call=job_calls == 1,
                )
        # No budget, so no reservation (a claim reserves only for a team with one).
        async with autocommit(rt.sessionmaker) as session:
            job_id = await finish_call_alone(
                session, call_id, attempt, outcome, team=team, model=model
            )
        if job_id is None:
            return None
        async with transaction(rt.sessionmaker) as session:
            return await maybe_finish_job(session, job_id)

    async for step in retrying(infrastructure, attempts=5):
        with step:
            return await _uninterrupted(write())
    raise AssertionError("unreachable: retrying re-raises")  # pragma: no cover


async def _release(
    rt: Runtime, call_id: str, attempt: int, delay: float, error: dict[str, Any] | None
) -> bool:
    async def write() -> bool:
        async with transaction(rt.sessionmaker) as session:
            return await release_call(session, call_id, attempt, delay=delay, error=error)

    return await _uninterrupted(write())


async def _fail(
    rt: Runtime,
    call_id: str,
    attempt: int,
    exc: LLMError,
    extra: dict[str, str],
    job_calls: int = 0,
) -> str:
    error = scrub(exc.as_error())
    error["attempts"] = attempt
    outcome = CallOutcome(CallStatus.FAILED, error=error)
    ended = await _finish(rt, call_id, attempt, outcome, job_calls=job_calls)
    log.warning("call failed", extra={**extra, "error": exc.message[:500]})
    if ended is not None:
        log.info("job ended", extra={**extra, "status": ended.status})
    return "failed"


async def _hand_back_when_possible(rt: Runtime, call_id: str, attempt: int) -> bool:
    """Try for a few seconds to put the call back in the queue (or, out of attempts, to fail
    it); True once done."""

    async def hand_back() -> None:
        if attempt >= rt.settings.worker_max_attempts:
            async with transaction(rt.sessionmaker) as session:
                await fail_call(session, call_id, OUTAGE_ATTEMPTS)
            return
        await _release(rt, call_id, attempt, 0.0, None)
        # Also when it was already released (by the retry path) but not enqueued.
        await enqueue_call(rt.queue, call_id, attempts=attempt)

    try:
        async for step in retrying(infrastructure, attempts=5):
            with step:
                await _uninterrupted(hand_back())
    except Exception as exc:
        if not infrastructure(exc):
            raise
        return False
    return True


async def renew_leases(rt: Runtime) -> int:
    """Extend the lease of every call this worker has in flight; returns how many."""
    call_ids = list(rt.inflight)
    if not call_ids:
        return 0
    async with transaction(rt.sessionmaker) as session:
        return await renew_call_leases(session, call_ids, rt.settings.worker_lease_seconds)


async def keep_leases(rt: Runtime) -> None:
    """Renew the in-flight calls' leases every third of a lease, until cancelled."""
    while True:
        await asyncio.sleep(rt.settings.worker_lease_seconds / 3)
        await renew_leases(rt)


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return bool(task is not None and task.cancelling())


def abort_calls(rt: Runtime, call_ids: list[str]) -> int:
    """Abort the provider requests of these calls if this worker runs them."""
    aborted = 0
    for call_id in call_ids:
        task = rt.inflight.get(call_id)
        if task is not None and not task.done():
            task.cancel()
            aborted += 1
    return aborted

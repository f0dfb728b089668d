"""State changes of calls and jobs, shared by the API, the worker and the reconciler.

Every change is a guarded UPDATE (`WHERE status = ...`), so a repeated task, a late answer or
two workers racing can never finish a call twice, count its tokens twice or end a job twice.

A job ends in exactly one place, `end_job`: whichever path ends it (its last call, a cancel, a
deadline, an expiry, a worker lost for good), the same in-transaction hooks run in a fixed order
(`JOB_END_HOOKS`: the money settlement, the usage rollup, then the webhook event) and the job's
live streams are woken once the transaction commits.

Every change that takes a call out of `running` also settles its budget reservation
(`shared.billing.budget.settle_calls`) in the same transaction, once its job is locked.

Lock order, everywhere: a job's calls (by id), then the job, then budget rows, then the team (then
its grants and its usage rollup rows).
Cancel, reconciler and workers take them in that order, so they never deadlock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from shared.billing.budget import settle_calls
from shared.billing.usage import roll_up_job
from shared.db import wake
from shared.jobs.money import price_call, settle_job
from shared.jobs.repository import JobRepository
from shared.jobs.views import job_out
from shared.models import (
    CALL_ACTIVE,
    JOB_CLOSED_ACTIVE,
    JOB_LIVE,
    JOB_TERMINAL,
    Call,
    CallStatus,
    Job,
    JobStatus,
    Team,
    TeamStatus,
)
from shared.webhooks.events import record_event


@dataclass(frozen=True)
class CallOutcome:
    """What a finished attempt produced."""

    status: CallStatus  # succeeded | failed
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    model_used: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None
    latency_ms: int | None = None
    litellm_call_id: str | None = None
    cached: bool = False


# Jobs whose queued calls may start (not paused, not ended).
JOB_RUNNABLE = (JobStatus.OPEN, JobStatus.QUEUED, JobStatus.RUNNING)


class TeamBusy(Exception):
    """The call's team already has its maximum number of calls running."""


# -- the job-end transition ----------------------------------------------------------------------

JobEndHook = Callable[[AsyncSession, Job], Awaitable[None]]


async def record_job_event(session: AsyncSession, job: Job) -> None:
    """Hook: the outbox event `job.<status>`, with the job as the API shows it."""
    counts = (await JobRepository(session).counts([job.id]))[job.id]
    data = job_out(job, counts).model_dump(mode="json")
    await record_event(
        session, job.team_id, f"job.{job.status}", data, job_id=job.id, extra_url=job.webhook_url
    )


# In this order, inside the transaction that ends the job.
JOB_END_HOOKS: tuple[JobEndHook, ...] = (settle_job, roll_up_job, record_job_event)


async def end_job(
    session: AsyncSession, job: Job, status: JobStatus, error: dict[str, Any] | None = None
) -> Job:
    """End a live job (locked by the caller) with a terminal `status`: the one place a job ends."""
    if status not in JOB_TERMINAL:
        raise ValueError(f"{status!r} is not a terminal job status")
    if job.status in JOB_TERMINAL:
        raise ValueError(f"job {job.id} has already ended ({job.status})")
    job.status = status
    job.error = error
    job.finished_at = func.now()
    job.expires_at = None
    await session.flush()
    await session.refresh(job)  # server-side values such as finished_at = now()
    for hook in JOB_END_HOOKS:
        await hook(session, job)
    wake(session, "job", job.id)
    return job


async def lock_job(session: AsyncSession, job_id: str) -> Job:
    return (
        await session.execute(select(Job).where(Job.id == job_id).with_for_update())
    ).scalar_one()


async def call_counts(session: AsyncSession, job_id: str) -> dict[str, int]:
    stmt = select(Call.status, func.count()).where(Call.job_id == job_id).group_by(Call.status)
    return {status: n for status, n in (await session.execute(stmt)).all()}


async def maybe_finish_job(session: AsyncSession, job_id: str) -> Job | None:
    """End a closed job whose calls have all ended; returns the job if this call ended it."""
    job = await lock_job(session, job_id)
    if job.status not in JOB_CLOSED_ACTIVE:
        return None  # open (step style, more calls may come) or already ended
    # One index probe instead of counting every call of a big job on each finish: calls start
    # roughly in seq order, so the last one is active until the job's very end.
    active = (
        select(Call.id)
        .where(Call.job_id == job_id, Call.status.in_(CALL_ACTIVE))
        .order_by(Call.seq.desc())
        .limit(1)
    )
    if (await session.execute(active)).first() is not None:
        return None
    counts = await call_counts(session, job_id)
    if any(counts.get(s, 0) for s in CALL_ACTIVE):
        return None
    total = sum(counts.values())
    failed = counts.get(CallStatus.FAILED, 0)
    if failed:
        error = {
            "type": "calls_failed",
            "message": f"{failed} of {total} call(s) failed; see each call's error",
        }
        return await end_job(session, job, JobStatus.FAILED, error)
    if counts.get(CallStatus.SUCCEEDED, 0) or total == 0:
        return await end_job(session, job, JobStatus.SUCCEEDED)
    return await end_job(session, job, JobStatus.CANCELLED)


# -- calls ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamGate:
    """What a claim must know of the call's team: read by the caller in the same transaction
    (the fair choice's query), or by `_check_team` itself."""

    team_id: str
    status: str
    max_calls_in_flight: int | None


@dataclass(frozen=True)
class Claim:
    """A claimed call with what its run needs: its team's row as the claim read it (budget,
    cache, markup) and its job's deadline, so none of them is selected again."""

    call: Call
    team: Team
    deadline: datetime | None


async def _check_team(session: AsyncSession, call_id: str, gate: TeamGate | None = None) -> bool:
    """False if the call's team is suspended (the call stays queued until it is resumed).

    Holds the team's claim lock and raises `TeamBusy` if the team is at `max_calls_in_flight`."""
    if gate is None:
        row = (
            await session.execute(
                select(Call.team_id, Team.status, Team.max_calls_in_flight)
                .join(Team, Team.id == Call.team_id)
                .where(Call.id == call_id, Call.status == CallStatus.QUEUED)
            )
        ).first()
        if row is None:
            return True  # not queued any more: the claim below finds nothing
        gate = TeamGate(*row)
    if gate.status != TeamStatus.ACTIVE:
        return False
    if gate.max_calls_in_flight is None:
        return True
    # Serializes claims of this team's calls until commit, so concurrent workers cannot overshoot.
    # The count is a statement of its own: its snapshot must be taken once the lock is held, to
    # see every running call committed by the claim that held it before.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(gate.team_id))))
    running = (
        await session.execute(
            select(func.count()).where(
                Call.team_id == gate.team_id, Call.status == CallStatus.RUNNING
            )
        )
    ).scalar_one()
    if running >= gate.max_calls_in_flight:
        raise TeamBusy(gate.team_id)
    return True


def _claim_statement(call_id: str, lease_seconds: float) -> Select[Call, datetime | None, Team]:
    """One statement: the call marked running, its job started, and the call, its job's
    deadline and its team's row returned."""
    job_runs = select(Job.id).where(Job.id == Call.job_id, Job.status.in_(JOB_RUNNABLE)).exists()
    claimed = (
        update(Call)
        .where(Call.id == call_id, Call.status == CallStatus.QUEUED, job_runs)
        .values(
            status=CallStatus.RUNNING,
            attempts=Call.attempts + 1,
            started_at=func.coalesce(Call.started_at, func.now()),
            lease_until=func.now() + timedelta(seconds=lease_seconds),
            next_attempt_at=None,
        )
        .returning(*Call.__table__.c)
        .cte("claimed")
    )
    started = (
        update(Job)
        .where(
            Job.id == claimed.c.job_id, (Job.status == JobStatus.QUEUED) | Job.started_at.is_(None)
        )
        .values(
            status=func.coalesce(func.nullif(Job.status, JobStatus.QUEUED), JobStatus.RUNNING),
            started_at=func.coalesce(Job.started_at, func.now()),
        )
        .returning(Job.id)
        .cte("started")
    )
    call = aliased(Call, claimed)
    # The jobs and teams rows are read from the statement's snapshot, as of before `started`
    # changed the job: its deadline is not among what `started` changes.
    return (
        select(call, Job.deadline_at, Team)
        .join(Job, Job.id == call.job_id)
        .join(Team, Team.id == call.team_id)
        .add_cte(started)
        .execution_options(populate_existing=True)
    )


async def claim(
    session: AsyncSession, call_id: str, lease_seconds: float, gate: TeamGate | None = None
) -> Claim | None:
    """Mark a queued call running (one more attempt) and start its job; None if it is not
    queued any more, its team is suspended, or its job has ended (then the call is cancelled).

    `gate`: the call's team as the caller read it in this transaction (else it is read here).
    Raises `TeamBusy` when the team's in-flight limit is reached (the caller tries later)."""
    if not await _check_team(session, call_id, gate):
        return None
    row = (await session.execute(_claim_statement(call_id, lease_seconds))).first()
    if row is None:
        # A call added while its job was being cancelled or expired never runs; one of a paused
        # job stays queued.
        job_ended = (
            select(Job.id).where(Job.id == Call.job_id, Job.status.in_(JOB_TERMINAL)).exists()
        )
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id == call_id, Call.status == CallStatus.QUEUED, job_ended)
            .values(status=CallStatus.CANCELLED, finished_at=func.now(), lease_until=None)
        )
        return None
    call, deadline, team = row
    wake(session, "job", call.job_id)
    return Claim(call, team, deadline)


async def claim_call(session: AsyncSession, call_id: str, lease_seconds: float) -> Call | None:
    """`claim`, for a caller that needs only the call."""
    claimed = await claim(session, call_id, lease_seconds)
    return claimed.call if claimed is not None else None


async def renew_call_leases(session: AsyncSession, call_ids: list[str], seconds: float) -> int:
    """Extend the leases of these running calls (their worker is alive); returns how many."""
    result = await session.execute(
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id.in_(call_ids), Call.status == CallStatus.RUNNING)
        .values(lease_until=func.now() + timedelta(seconds=seconds))
        .returning(Call.id)
    )
    return len(result.all())


async def release_call(
    session: AsyncSession,
    call_id: str,
    attempt: int,
    *,
    delay: float,
    error: dict[str, Any] | None,
    refund_attempt: bool = False,
) -> bool:
    """Put a running call back in the queue to run again after `delay` seconds."""
    values: dict[str, Any] = {
        "status": CallStatus.QUEUED,
        "lease_until": None,
        "next_attempt_at": func.now() + timedelta(seconds=delay),
        "error": error,
    }
    if refund_attempt:
        values["attempts"] = Call.attempts - 1
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == CallStatus.RUNNING, Call.attempts == attempt)
        .values(**values)
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is not None:
        await settle_calls(session, [call_id])
        wake(session, "job", job_id)
    return job_id is not None


async def finish_call(
    session: AsyncSession, call_id: str, attempt: int, outcome: CallOutcome
) -> Job | None:
    """Record a running call's end once; add it to its job's totals; end the job if it was last.

    Returns the job if this ended it.
    """
    billed = None
    if outcome.status == CallStatus.SUCCEEDED:
        billed = await price_call(
            session, call_id, outcome.prompt_tokens, outcome.completion_tokens, outcome.cost_usd
        )
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == CallStatus.RUNNING, Call.attempts == attempt)
        .values(
            status=outcome.status,
            response=outcome.response,
            error=outcome.error,
            model_used=outcome.model_used,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            total_tokens=outcome.total_tokens,
            cost_usd=outcome.cost_usd,
            billed_usd=billed,
            latency_ms=outcome.latency_ms,
            litellm_call_id=outcome.litellm_call_id,
            cached=outcome.cached,
            finished_at=func.now(),
            lease_until=None,
        )
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is None:
        return None  # cancelled, re-claimed or already finished: discard this answer
    await session.execute(
        update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == job_id)
        .values(
            prompt_tokens=Job.prompt_tokens + (outcome.prompt_tokens or 0),
            completion_tokens=Job.completion_tokens + (outcome.completion_tokens or 0),
            total_tokens=Job.total_tokens + (outcome.total_tokens or 0),
            cost_usd=Job.cost_usd + (outcome.cost_usd or Decimal(0)),
            billed_usd=Job.billed_usd + (billed or Decimal(0)),
        )
    )
    await settle_calls(session, [call_id])
    wake(session, "job", job_id)
    return await maybe_finish_job(session, job_id)


async def fail_call(session: AsyncSession, call_id: str, error: dict[str, Any]) -> Job | None:
    """End an unfinished call that cannot run any more; ends its job if it was the last."""
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status.in_(CALL_ACTIVE))
        .values(status=CallStatus.FAILED, error=error, finished_at=func.now(), lease_until=None)
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is None:
        return None
    await lock_job(session, job_id)
    await settle_calls(session, [call_id])
    wake(session, "job", job_id)
    return await maybe_finish_job(session, job_id)


async def lock_active_calls(session: AsyncSession, job_id: str) -> list[str]:
    """Lock a job's unfinished calls, in id order (before the job's own lock: see above)."""
    stmt = (
        select(Call.id)
        .where(Call.job_id == job_id, Call.status.in_(CALL_ACTIVE))
        .order_by(Call.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars().all())


async def stop_calls(
    session: AsyncSession, call_ids: list[str], status: CallStatus, error: dict[str, Any] | None
) -> None:
    """End these (locked) unfinished calls of a locked job with `status`, without ending it."""
    if call_ids:
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id.in_(call_ids), Call.status.in_(CALL_ACTIVE))
            .values(status=status, error=error, finished_at=func.now(), lease_until=None)
        )
        await settle_calls(session, call_ids)


async def end_unfinished(
    session: AsyncSession,
    job_id: str,
    call_status: CallStatus,
    call_error: dict[str, Any] | None,
    *,
    job_error: dict[str, Any] | None,
) -> Job | None:
    """End a job's unfinished calls with `call_status`; with `job_error`, the job ends `expired`
    (step style, never completed), else it ends by its calls. Returns the job if this ended it."""
    call_ids = await lock_active_calls(session, job_id)
    job = await lock_job(session, job_id)
    await stop_calls(session, call_ids, call_status, call_error)
    if job.status not in JOB_LIVE:
        return None
    if job_error is not None:
        return await end_job(session, job, JobStatus.EXPIRED, job_error)
    if job.status == JobStatus.OPEN:
        job.status = JobStatus.RUNNING
        await session.flush()
    return await maybe_finish_job(session, job_id)

"""State changes of calls and jobs, shared by the API, the worker and the reconciler.

Every change is a guarded UPDATE (`WHERE status = ...`), so a repeated task, a late answer or
two workers racing can never finish a call twice, count its tokens twice or end a job twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Call, Job, Team
from shared.webhooks.events import record_job_event

ACTIVE_CALL = ("queued", "running")
LIVE_JOB = ("open", "queued", "running")


@dataclass(frozen=True)
class CallOutcome:
    """What a finished attempt produced."""

    status: str  # succeeded | failed
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    model_used: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: Decimal | None = None
    latency_ms: int | None = None
    litellm_call_id: str | None = None


class TeamBusy(Exception):
    """The call's team already has its maximum number of calls running."""


async def _check_in_flight(session: AsyncSession, call_id: str) -> None:
    """Hold the team's claim lock and raise `TeamBusy` if the team is at `max_calls_in_flight`."""
    row = (
        await session.execute(
            select(Call.team_id, Team.max_calls_in_flight)
            .join(Team, Team.id == Call.team_id)
            .where(Call.id == call_id, Call.status == "queued")
        )
    ).first()
    if row is None or row[1] is None:
        return
    team_id: str = row[0]
    limit: int = row[1]
    # Serializes claims of this team's calls until commit, so concurrent workers cannot overshoot.
    await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(team_id))))
    running = (
        await session.execute(
            select(func.count()).where(Call.team_id == team_id, Call.status == "running")
        )
    ).scalar_one()
    if running >= limit:
        raise TeamBusy(team_id)


async def claim_call(session: AsyncSession, call_id: str, lease_seconds: float) -> Call | None:
    """Mark a queued call running (one more attempt); None if it is not queued any more.

    Raises `TeamBusy` when the team's in-flight limit is reached (the caller tries later)."""
    await _check_in_flight(session, call_id)
    job_live = select(Job.id).where(Job.id == Call.job_id, Job.status.in_(LIVE_JOB)).exists()
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == "queued", job_live)
        .values(
            status="running",
            attempts=Call.attempts + 1,
            started_at=func.coalesce(Call.started_at, func.now()),
            lease_until=func.now() + timedelta(seconds=lease_seconds),
            next_attempt_at=None,
        )
        .returning(Call)
    )
    call = (await session.execute(stmt)).scalar_one_or_none()
    if call is None:
        # A call added while its job was being cancelled or expired never runs.
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id == call_id, Call.status == "queued", ~job_live)
            .values(status="cancelled", finished_at=func.now(), lease_until=None)
        )
        return None
    await session.execute(
        update(Job)
        .execution_options(synchronize_session=False)
        .where(Job.id == call.job_id, (Job.status == "queued") | Job.started_at.is_(None))
        .values(
            status=func.coalesce(func.nullif(Job.status, "queued"), "running"),
            started_at=func.coalesce(Job.started_at, func.now()),
        )
    )
    return call


async def job_deadline(session: AsyncSession, job_id: str) -> datetime | None:
    stmt = select(Job.deadline_at).where(Job.id == job_id)
    return (await session.execute(stmt)).scalar_one_or_none()


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
        "status": "queued",
        "lease_until": None,
        "next_attempt_at": func.now() + timedelta(seconds=delay),
        "error": error,
    }
    if refund_attempt:
        values["attempts"] = Call.attempts - 1
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == "running", Call.attempts == attempt)
        .values(**values)
        .returning(Call.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none() is not None


async def finish_call(
    session: AsyncSession, call_id: str, attempt: int, outcome: CallOutcome
) -> Job | None:
    """Record a running call's end once; add it to its job's totals; end the job if it was last.

    Returns the job if this ended it.
    """
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status == "running", Call.attempts == attempt)
        .values(
            status=outcome.status,
            response=outcome.response,
            error=outcome.error,
            model_used=outcome.model_used,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            total_tokens=outcome.total_tokens,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            litellm_call_id=outcome.litellm_call_id,
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
        )
    )
    return await maybe_finish_job(session, job_id)


async def fail_call(session: AsyncSession, call_id: str, error: dict[str, Any]) -> Job | None:
    """End an unfinished call that cannot run any more; ends its job if it was the last."""
    stmt = (
        update(Call)
        .execution_options(synchronize_session=False)
        .where(Call.id == call_id, Call.status.in_(ACTIVE_CALL))
        .values(status="failed", error=error, finished_at=func.now(), lease_until=None)
        .returning(Call.job_id)
    )
    job_id = (await session.execute(stmt)).scalar_one_or_none()
    if job_id is None:
        return None
    return await maybe_finish_job(session, job_id)


async def lock_active_calls(session: AsyncSession, job_id: str) -> list[str]:
    """Lock a job's unfinished calls, in id order; take these locks before the job's own lock
    (the order the worker uses) so that cancel, reconciler and workers never deadlock."""
    stmt = (
        select(Call.id)
        .where(Call.job_id == job_id, Call.status.in_(ACTIVE_CALL))
        .order_by(Call.id)
        .with_for_update()
    )
    return list((await session.execute(stmt)).scalars().all())


async def end_unfinished(
    session: AsyncSession,
    job_id: str,
    call_status: str,
    call_error: dict[str, Any] | None,
    *,
    job_error: dict[str, Any] | None,
) -> Job | None:
    """End a job's unfinished calls with `call_status`; with `job_error`, the job ends `expired`
    (step style, never completed), else it ends by its calls. Returns the job if this ended it."""
    ids = await lock_active_calls(session, job_id)
    if ids:
        await session.execute(
            update(Call)
            .execution_options(synchronize_session=False)
            .where(Call.id.in_(ids), Call.status.in_(ACTIVE_CALL))
            .values(status=call_status, error=call_error, finished_at=func.now(), lease_until=None)
        )
    job = (
        await session.execute(select(Job).where(Job.id == job_id).with_for_update())
    ).scalar_one()
    if job.status not in ("open", "queued", "running"):
        return None
    if job_error is not None:
        job.status = "expired"
        job.error = job_error
        job.finished_at = func.now()
        await session.flush()
        await session.refresh(job)
        await record_job_event(session, job)
        return job
    if job.status == "open":
        job.status = "running"
        await session.flush()
    return await maybe_finish_job(session, job_id)


async def call_counts(session: AsyncSession, job_id: str) -> dict[str, int]:
    stmt = select(Call.status, func.count()).where(Call.job_id == job_id).group_by(Call.status)
    return {status: n for status, n in (await session.execute(stmt)).all()}


async def maybe_finish_job(session: AsyncSession, job_id: str) -> Job | None:
    """End a closed job whose calls have all ended; returns the job if this call ended it."""
    job = (
        await session.execute(select(Job).where(Job.id == job_id).with_for_update())
    ).scalar_one()
    if job.status not in ("queued", "running"):
        return None  # open (step style, more calls may come) or already ended
    counts = await call_counts(session, job_id)
    if any(counts.get(s, 0) for s in ACTIVE_CALL):
        return None
    total = sum(counts.values())
    failed = counts.get("failed", 0)
    if failed:
        job.status = "failed"
        job.error = {
            "type": "calls_failed",
            "message": f"{failed} of {total} call(s) failed; see each call's error",
        }
    elif counts.get("succeeded", 0) or total == 0:
        job.status = "succeeded"
    else:
        job.status = "cancelled"
    job.finished_at = func.now()
    await session.flush()
    await session.refresh(job)
    await record_job_event(session, job)
    return job
